// The official openai package, unmodified, against roster's apiserver.
// Driven by tests/service/test_apiserver.py, which starts the processes and
// checks what this prints: one JSON object with what the SDK returned.
//
// env: ROSTER_BASE_URL (".../v1"), ROSTER_API_KEY, ROSTER_CHAT_MODEL,
//      ROSTER_EMB_MODEL, ROSTER_ZERO_MODEL (registered, nothing routable)
import OpenAI from "openai";

const env = process.env;
const client = new OpenAI({ baseURL: env.ROSTER_BASE_URL, apiKey: env.ROSTER_API_KEY,
                            maxRetries: 0, timeout: 10000 });
const out = {};

async function errorOf(fn) {
  try {
    await fn();
    return { thrown: false };
  } catch (e) {
    return { thrown: true, class: e.constructor.name, status: e.status ?? null,
             code: e.code ?? null, message: String(e.message) };
  }
}

const messages = [{ role: "user", content: "How does a worker register?" }];

const models = await client.models.list();
out.models = models.data.map((m) => m.id).sort();
out.model = (await client.models.retrieve(env.ROSTER_CHAT_MODEL)).id;

const chat = await client.chat.completions.create({
  model: env.ROSTER_CHAT_MODEL, messages, temperature: 0, max_tokens: 20, seed: 7,
});
out.chat = { object: chat.object, text: chat.choices[0].message.content,
             finish: chat.choices[0].finish_reason, usage: chat.usage };

const stream = await client.chat.completions.create({
  model: env.ROSTER_CHAT_MODEL, messages, temperature: 0, max_tokens: 20, stream: true,
  stream_options: { include_usage: true },
});
let text = "", chunks = 0, usage = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
out.stream = { text, chunks, usage };

const comp = await client.completions.create({
  model: env.ROSTER_CHAT_MODEL, prompt: "The controller", temperature: 0, max_tokens: 10,
});
out.completion = { object: comp.object, text: comp.choices[0].text };

const emb = await client.embeddings.create({ model: env.ROSTER_EMB_MODEL,
                                            input: ["hello world", "roster"] });
out.embeddings = { n: emb.data.length, dims: emb.data.map((d) => d.embedding.length),
                   norm: Math.hypot(...emb.data[0].embedding) };
// the SDK asks for base64 by default when the caller does not say: check both
const emb64 = await client.embeddings.create({ model: env.ROSTER_EMB_MODEL, input: "hello world",
                                              encoding_format: "float" });
out.embeddings.same = emb64.data[0].embedding.every((v, i) =>
  Math.abs(v - emb.data[0].embedding[i]) < 1e-6);

const bad = new OpenAI({ baseURL: env.ROSTER_BASE_URL, apiKey: "wrong-key", maxRetries: 0 });
out.bad_key = await errorOf(() => bad.chat.completions.create({
  model: env.ROSTER_CHAT_MODEL, messages }));
out.unknown_model = await errorOf(() => client.chat.completions.create({
  model: "no-such-model", messages }));
out.no_instance = await errorOf(() => client.chat.completions.create({
  model: env.ROSTER_ZERO_MODEL, messages }));

console.log(JSON.stringify(out));
