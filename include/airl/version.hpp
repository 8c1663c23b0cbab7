// SPDX-License-Identifier: MIT
#pragma once
// The library version, kept equal to project(VERSION) in CMakeLists.txt.

#define AIRL_VERSION_MAJOR 0
#define AIRL_VERSION_MINOR 1
#define AIRL_VERSION_PATCH 0
#define AIRL_VERSION_STRING "0.1.0"
