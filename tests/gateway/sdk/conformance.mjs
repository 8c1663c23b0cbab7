// The official OpenAI Node SDK (openai, pinned in package-lock.json) against a running airl_gateway:
//   node conformance.mjs <api base URL> <admin base URL>
// tests/gateway/gateway_sdk_test.cpp starts the gateway with the config this script expects and runs it.
// Every check prints one line; the first failure prints what was seen and exits 1.
import OpenAI from 'openai';

const [apiBase, adminBase] = process.argv.slice(2);
if (!apiBase || !adminBase) {
  console.error('usage: node conformance.mjs <api base URL> <admin base URL>');
  process.exit(2);
}

let checks = 0;
function check(condition, what, seen) {
  if (!condition) {
    console.error(`FAILED: ${what}${seen === undefined ? '' : `\n  seen: ${JSON.stringify(seen)}`}`);
    process.exit(1);
  }
  checks++;
}
async function expectError(promise, what) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  check(false, `${what}: the call should have failed`);
}
const sdk = (apiKey, options = {}) => new OpenAI({ apiKey, baseURL: `${apiBase}/v1`, maxRetries: 0, ...options });
const hello = [{ role: 'user', content: 'hello' }];  // the gateway estimates it at 5 prompt tokens
const model = 'llama';

async function metric(name) {
  const text = await (await fetch(`${adminBase}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

const main = sdk('sk-main');

// --- the model list, and plain completions ---
const models = await main.models.list();
check(JSON.stringify(models.data.map((m) => m.id)) === '["llama","mistral"]', 'models.list() lists the configured models', models.data);
check((await main.models.retrieve('mistral')).id === 'mistral', 'models.retrieve() finds a configured model');

const { data: plain, response: plainResponse } =
  await main.chat.completions.create({ model, messages: hello, max_tokens: 100 }).withResponse();
check(plain.object === 'chat.completion' && typeof plain.created === 'number', 'a completion is a chat.completion with created', plain);
check(plain.choices[0].finish_reason === 'stop', 'a reply that ended before max_tokens stops with "stop"', plain.choices[0]);
check(plain.usage.prompt_tokens === 5 && plain.usage.completion_tokens === 50, 'usage counts the prompt and the reply', plain.usage);
check(plainResponse.headers.get('x-ratelimit-remaining-tokens') === String(100000 - 105),
      'the reservation (prompt + max_tokens) shows in x-ratelimit-remaining-tokens',
      plainResponse.headers.get('x-ratelimit-remaining-tokens'));
const { response: nextResponse } =
  await main.chat.completions.create({ model, messages: hello, max_completion_tokens: 3 }).withResponse();
// The first request was settled at 5 + 50 before the second was decided (5 + 3 reserved).
check(nextResponse.headers.get('x-ratelimit-remaining-tokens') === String(100000 - 55 - 8),
      'the settle of the previous reply shows in the next response', nextResponse.headers.get('x-ratelimit-remaining-tokens'));

const short = await main.chat.completions.create({ model, messages: hello, max_completion_tokens: 3 });
check(short.choices[0].finish_reason === 'length' && short.usage.completion_tokens === 3,
      'max_completion_tokens is honoured, and a reply cut there ends with "length"', short);

// --- streams ---
const chunks = [];
const stream = await main.chat.completions.create({
  model, messages: hello, max_tokens: 100, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) chunks.push(chunk);
check(chunks[0].choices[0].delta.role === 'assistant', 'the first chunk carries the assistant role', chunks[0]);
check(chunks.every((c) => c.object === 'chat.completion.chunk' && typeof c.created === 'number'), 'every chunk has created');
const finished = chunks.filter((c) => c.choices.length > 0 && c.choices[0].finish_reason !== null);
check(finished.length === 1 && finished[0].choices[0].finish_reason === 'stop', 'one chunk ends the reply, with "stop"', finished);
const last = chunks[chunks.length - 1];
check(last.choices.length === 0 && last.usage.completion_tokens === 50, 'include_usage adds a last chunk with the usage', last);
const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
check(text.startsWith('echo: '), 'the streamed text is the reply', text);

const helper = main.chat.completions.stream({ model, messages: hello, max_tokens: 100 });
const accumulated = await helper.finalChatCompletion();
check(accumulated.choices[0].message.role === 'assistant' && accumulated.choices[0].message.content === text,
      'the SDK stream helper accumulates the chunks into the same reply', accumulated.choices[0].message);

// --- parse() ---
const parsed = await main.chat.completions.parse({ model, messages: hello, max_tokens: 100 });
check(parsed.choices[0].message.parsed === null && parsed.choices[0].finish_reason === 'stop', 'parse() accepts a complete reply', parsed.choices[0]);
const cut = await expectError(main.chat.completions.parse({ model, messages: hello, max_tokens: 2 }), 'parse() of a cut reply');
check(cut.constructor.name === 'LengthFinishReasonError', 'parse() refuses a reply cut at max_tokens, as for OpenAI', cut.constructor.name);

// --- what OpenAI accepts in messages ---
const tools = await main.chat.completions.create({
  model,
  max_tokens: 5,
  messages: [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: [{ type: 'text', text: 'what is in this image?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'look', arguments: '{"at":"image"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: 'a cat' },
  ],
});
check(tools.choices[0].message.content.length > 0, 'content parts, null content with tool_calls and tool messages are accepted', tools);

// --- errors the SDK turns into typed errors with type, code and message ---
const unauthenticated = await expectError(sdk('sk-wrong').chat.completions.create({ model, messages: hello }), 'a wrong key');
check(unauthenticated instanceof OpenAI.AuthenticationError && unauthenticated.code === 'invalid_api_key' &&
      unauthenticated.type === 'invalid_request_error', 'a wrong key is an AuthenticationError with its code', unauthenticated);
const unknownModel = await expectError(main.chat.completions.create({ model: 'gpt-made-up-1', messages: hello }), 'an unknown model');
check(unknownModel instanceof OpenAI.NotFoundError && unknownModel.code === 'model_not_found' &&
      unknownModel.message.includes('gpt-made-up-1'), 'an unknown model is a NotFoundError, code model_not_found', unknownModel);
const badRequest = await expectError(main.chat.completions.create({ model, messages: hello, max_tokens: 0 }), 'max_tokens 0');
check(badRequest instanceof OpenAI.BadRequestError && badRequest.type === 'invalid_request_error' &&
      badRequest.message.includes('max_tokens'), 'a bad max_tokens is a BadRequestError naming it', badRequest);

// --- rate limits: typed errors, retries paced by retry-after-ms ---
const tight = sdk('sk-tight');  // 3 requests per 4 s window
for (let i = 0; i < 3; i++) await tight.chat.completions.create({ model, messages: hello, max_tokens: 1 });
const limited = await expectError(tight.chat.completions.create({ model, messages: hello, max_tokens: 1 }), 'the 4th request');
const limitedAt = Date.now();
check(limited instanceof OpenAI.RateLimitError && limited.status === 429, 'over the limit is a RateLimitError', limited);
check(limited.type === 'requests' && limited.code === 'rate_limit_exceeded' && limited.message.includes('Rate limit reached'),
      'its type, code and message say which limit', { type: limited.type, code: limited.code, message: limited.message });
const waitMs = Number(limited.headers.get('retry-after-ms'));
check(waitMs > 0 && waitMs <= 4000 && Math.ceil(waitMs / 1000) === Number(limited.headers.get('retry-after')),
      'retry-after-ms is the exact wait, Retry-After the same in whole seconds',
      [limited.headers.get('retry-after-ms'), limited.headers.get('retry-after')]);
// Two retries of the SDK's own backoff take at most 1.5 s; the wait here is longer, so only a client pacing by
// retry-after-ms gets through.
const patient = sdk('sk-tight', { maxRetries: 2 });
const retried = await patient.chat.completions.create({ model, messages: hello, max_tokens: 1 });
const waited = Date.now() - limitedAt;
check(retried.choices.length === 1 && waited >= waitMs - 100 && waited < waitMs + 2000,
      'the SDK retried after retry-after-ms and was admitted', { waitMs, waited });

// A request that can never fit: 429 "Request too large", x-should-retry: false, and the SDK does not retry.
const tooLargeBefore = await metric('airl_denials_total{reason="user_model_tpm"}');
const small = sdk('sk-small', { maxRetries: 3 });  // 300 tokens per window
const tooLarge = await expectError(small.chat.completions.create({ model, messages: hello, max_tokens: 400 }), 'a request above the tpm limit');
check(tooLarge instanceof OpenAI.RateLimitError && tooLarge.type === 'tokens' && tooLarge.message.includes('Request too large') &&
      tooLarge.message.includes('Limit 300, Requested 405'), 'a request that can never fit says so', tooLarge.message);
check(tooLarge.headers.get('x-should-retry') === 'false' && tooLarge.headers.get('retry-after') === null,
      'it carries x-should-retry: false and no Retry-After', [...tooLarge.headers.entries()]);
check(await metric('airl_denials_total{reason="user_model_tpm"}') === tooLargeBefore + 1, 'the SDK sent it once, not four times');

// A reused X-Request-Id: 409 with x-should-retry: false (the SDK would retry a 409 otherwise).
const reusedBefore = await metric('airl_gateway_refusals_total{reason="request_id_reused"}');
const once = sdk('sk-main', { maxRetries: 3, defaultHeaders: { 'X-Request-Id': 'sdk-conformance-reused' } });
await once.chat.completions.create({ model, messages: hello, max_tokens: 1 });
const reused = await expectError(once.chat.completions.create({ model, messages: hello, max_tokens: 1 }), 'a reused X-Request-Id');
check(reused instanceof OpenAI.ConflictError && reused.code === 'request_id_reused', 'a reused id is a ConflictError', reused);
check(await metric('airl_gateway_refusals_total{reason="request_id_reused"}') === reusedBefore + 1, 'the SDK did not retry the 409');

// --- an in-flight cap: a short hint (--slot-retry-after-ms 300), not the lease ---
const capped = sdk('sk-cap');  // in_flight user 1
const holding = await capped.chat.completions.create({ model, messages: hello, max_tokens: 50, stream: true });
const holder = (async () => { for await (const _ of holding) { /* drain */ } })();
const full = await expectError(capped.chat.completions.create({ model, messages: hello, max_tokens: 1 }), 'a second request in flight');
check(full instanceof OpenAI.RateLimitError && full.message.includes('in flight'), 'a full in-flight cap is a RateLimitError', full.message);
check(full.headers.get('retry-after-ms') === '300' && full.headers.get('retry-after') === '1', 'its hint is short, not the 600 s lease',
      [full.headers.get('retry-after-ms'), full.headers.get('retry-after')]);
const capStart = Date.now();
const afterCap = await sdk('sk-cap', { maxRetries: 5 }).chat.completions.create({ model, messages: hello, max_tokens: 1 });
check(afterCap.choices.length === 1 && Date.now() - capStart < 3000, 'the SDK got through as soon as the slot was free', Date.now() - capStart);
await holder;

console.log(`ok: ${checks} checks passed with openai ${OpenAI.VERSION ?? ''}`);
