#!/usr/bin/env node
// Smoke check for tools/make-test-model.py: llama.cpp (node-llama-cpp) loads
// each GGUF given on the command line, reads back the shape it was written
// with, and greedily generates a few tokens from a short prompt. Also checks
// that the random weights give a non-degenerate next-token distribution (no
// token with nearly all the mass, and not NaN). Exit 0 only if every model
// passes; one JSON line per model on stdout.
//
//   node tests/peer/smoke_load.mjs MODEL.gguf [MODEL2.gguf ...]
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {createRequire} from "node:module";

const peerDir = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(peerDir, "package.json"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const kThreads = 2;
const kNewTokens = 8;
const kMaxTopProbability = 0.9;

async function check(llama, modelPath) {
  const model = await llama.loadModel({modelPath, gpuLayers: 0});
  const ctx = await model.createContext({
    contextSize: 256, batchSize: 256, sequences: 1, threads: kThreads,
    flashAttention: false,
  });
  const seq = ctx.getSequence();
  const result = {model: modelPath, ok: true, problems: []};
  try {
    const llamaMetadata = model.fileInfo.metadata?.llama ?? {};
    result.block_count = llamaMetadata.block_count ?? null;
    result.embedding_length = llamaMetadata.embedding_length ?? null;
    result.vocab_size = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? null;
    const prompt = model.tokenize("The quick brown fox", false);
    const generated = [];
    const topProbabilities = [];
    const iter = seq.evaluateWithMetadata(prompt, {probabilities: true},
                                          {temperature: 0, yieldEogToken: true});
    for await (const out of iter) {
      let top = null;
      for (const [, p] of out.probabilities) { top = p; break; }  // sorted descending
      generated.push(out.token);
      topProbabilities.push(top);
      if (generated.length >= kNewTokens) break;
    }
    result.prompt_ids = Array.from(prompt);
    result.generated_ids = generated;
    result.text = model.detokenize(generated, false);
    result.top_probabilities = topProbabilities;
    if (generated.length !== kNewTokens) {
      result.problems.push(`generated ${generated.length} tokens, wanted ${kNewTokens}`);
    }
    for (const p of topProbabilities) {
      if (!Number.isFinite(p)) result.problems.push(`top probability ${p}`);
      else if (p > kMaxTopProbability) result.problems.push(`degenerate: top probability ${p}`);
    }
  } catch (error) {
    result.problems.push(String(error));
  } finally {
    seq.dispose();
    await ctx.dispose();
    await model.dispose();
  }
  result.ok = result.problems.length === 0;
  return result;
}

const models = process.argv.slice(2);
if (models.length === 0) {
  console.error("usage: node tests/peer/smoke_load.mjs MODEL.gguf [...]");
  process.exit(2);
}
const llama = await getLlama({
  gpu: false, build: "never", maxThreads: kThreads, logLevel: LlamaLogLevel.error,
  progressLogs: false,
});
let failures = 0;
for (const modelPath of models) {
  let result;
  if (!fs.existsSync(modelPath)) {
    result = {model: modelPath, ok: false, problems: ["file not found"]};
  } else {
    try {
      result = await check(llama, modelPath);
    } catch (error) {
      result = {model: modelPath, ok: false, problems: [`load failed: ${error}`]};
    }
  }
  if (!result.ok) failures++;
  console.log(JSON.stringify(result));
}
await llama.dispose();
process.exit(failures === 0 ? 0 : 1);
