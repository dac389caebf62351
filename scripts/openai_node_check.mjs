// Drives a running `paged --http` with the official OpenAI Node client (npm
// package `openai`), the same checks as openai_client_check.py: the models,
// a greedy completion whole and streamed, a chat completion whole and
// streamed, an unknown model and n=2 refused.
//
// usage: node scripts/openai_node_check.mjs BASE_URL [EXPECTED_PREFIX]
// The package is found through NODE_PATH or a node_modules above the
// current directory (`npm i openai` in a scratch folder, then
// NODE_PATH=that/node_modules). Over https with a self-signed certificate:
// NODE_EXTRA_CA_CERTS=cert.pem. Exits 0 when every check passes, 1 when one
// fails, 3 when the package is missing.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.cwd(), "noop.js"));
let OpenAI;
try {
  OpenAI = require("openai").default ?? require("openai");
} catch (e) {
  console.log("openai_node_check: the openai package is not installed (npm i openai)");
  process.exit(3);
}

const base = process.argv[2];
const expected = process.argv[3] ?? "";
const client = new OpenAI({ baseURL: base, apiKey: process.env.PAGED_TOKEN ?? "unused" });
const failures = [];

const models = (await client.models.list()).data.map((m) => m.id);
console.log("models:", models);
if (models.length !== 1) failures.push("expected one model");
const model = models[0];

const prompt = "Once upon a time";
const whole = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0 });
const text = whole.choices[0].text;
console.log("completion:", JSON.stringify(text), whole.choices[0].finish_reason, whole.usage);
let streamed = "";
for await (const c of await client.completions.create({
  model, prompt, max_tokens: 40, temperature: 0, stream: true,
})) {
  if (c.choices?.length) streamed += c.choices[0].text;
}
if (streamed !== text) failures.push(`streamed completion differs: ${JSON.stringify(streamed)}`);
if (expected && !text.startsWith(expected)) failures.push(`completion does not start with ${expected}`);
if (whole.usage.completion_tokens !== 40 && whole.choices[0].finish_reason === "length")
  failures.push("usage.completion_tokens != max_tokens");

const messages = [
  { role: "system", content: "You tell stories." },
  { role: "user", content: "Tell me one." },
];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0 });
const reply = chat.choices[0].message.content;
console.log("chat:", JSON.stringify(reply), chat.choices[0].finish_reason);
let parts = "";
let usage = null;
for await (const c of await client.chat.completions.create({
  model, messages, max_tokens: 30, temperature: 0, stream: true,
  stream_options: { include_usage: true },
})) {
  if (c.choices?.length && c.choices[0].delta?.content) parts += c.choices[0].delta.content;
  if (c.usage) usage = c.usage;
}
if (parts !== reply) failures.push(`streamed chat differs: ${JSON.stringify(parts)}`);
if (!usage) failures.push("no usage chunk with stream_options.include_usage");

try {
  await client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 1 });
  failures.push("an unknown model was accepted");
} catch (e) {
  console.log("unknown model:", e.status);
  if (e.status !== 404) failures.push(`unknown model: status ${e.status}`);
}
try {
  await client.completions.create({ model, prompt: "x", max_tokens: 1, n: 2 });
  failures.push("n=2 was accepted");
} catch (e) {
  console.log("n=2:", e.status);
  if (e.status !== 400) failures.push(`n=2: status ${e.status}`);
}

for (const f of failures) console.log("FAIL:", f);
console.log("openai_node_check:", failures.length ? `${failures.length} failure(s)` : "ok");
process.exit(failures.length ? 1 : 0);
