// SPDX-License-Identifier: MIT
#pragma once
// Options of a limiter (as opposed to its storage's).

namespace airl {

struct LimiterOptions {
  // Shadow mode: every decision is computed and counted in the metrics as usual, but every request is
  // admitted; a decision the limits would have denied comes back allowed with Decision::shadow_denied set
  // (its reason and retry_after say why and for how long). Requests the limits deny are still not recorded,
  // so the logs hold what the limits would have admitted. For trying new limits on live traffic.
  bool shadow = false;
};

}  // namespace airl
