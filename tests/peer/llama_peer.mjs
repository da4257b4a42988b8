#!/usr/bin/env node
// Reference peer: llama.cpp (through node-llama-cpp) as the independent
// implementation our engine is compared with. Prints JSON on stdout.
//
//   tokenize --model F (--text T | --text-file P)
//       -> {"ids":[...],"add_bos":b,"add_eos":b}
//       The ids llama.cpp evaluates for a raw-text prompt: special tokens in
//       the text are parsed and BOS/EOS added per the model's add_bos/add_eos
//       flags (common_tokenize(vocab, text, add_special=true, parse_special=true)).
//   generate --model F (--prompt-ids IDS | --prompt T | --prompt-file P) [--n 64] [--top 10]
//       Greedy continuation; per generated step the log-prob of the chosen
//       token, the top-1/top-2 log-prob margin and the top-N list.
//   batch --model F --jobs JOBS.json [--n 64] [--top 10] [--sequential 1]
//       JOBS.json: [{"name":..,"prompt_ids":[..]} | {"name":..,"text":..}, ...]
//       Runs tokenize (for text jobs) + generate for each job with one loaded
//       model; prints {"model":..,"results":[{"name":..,"tokenize":..,"generate":..,
//       "teacher_forced":[positions from prompt_len-1 on, as `score` prints them],
//       "teacher_forced_sequential": the same scored one token per batch (--sequential 1)}]}.
//   score --model F --prompt-ids IDS [--top 10] [--from 0]
//       Teacher-forced (one batch): for each position i >= from the distribution
//       after ids[0..i] (top-N), the log-prob of ids[i+1] and the top-1/top-2 margin.
//
// Determinism: CPU only, 2 threads, F32 KV cache, no flash attention, so that
// differences against our engine come from the model math, not the cache.
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {createRequire} from "node:module";

const peerDir = path.dirname(fileURLToPath(import.meta.url));
// Resolve node-llama-cpp from tests/peer/node_modules regardless of the cwd.
const require = createRequire(path.join(peerDir, "package.json"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const kThreads = 2;

function parseArgs(argv) {
  const args = {_: []};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--")) {
      const key = a.slice(2);
      if (i + 1 >= argv.length) throw new Error(`option --${key} needs a value`);
      args[key] = argv[++i];
    } else {
      args._.push(a);
    }
  }
  return args;
}

function parseIds(text) {
  const ids = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0) throw new Error(`bad token id in --prompt-ids: ${text}`);
  }
  return ids;
}

function readText(args, inlineKey, fileKey) {
  if (args[inlineKey] != null) return args[inlineKey];
  if (args[fileKey] != null) return fs.readFileSync(args[fileKey], "utf8");
  return null;
}

async function loadModel(modelPath) {
  if (!fs.existsSync(modelPath)) throw new Error(`model file not found: ${modelPath}`);
  const llama = await getLlama({
    gpu: false,
    build: "never",
    maxThreads: kThreads,
    logLevel: LlamaLogLevel.error,
    progressLogs: false,
  });
  const model = await llama.loadModel({modelPath, gpuLayers: 0});
  return {llama, model};
}

// --kv-type: the KV cache's type (f32 by default). llama.cpp holds a
// quantised V cache only with flash attention, so q8_0 turns it on.
const kKvTypes = {f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0"};
let kvType = "f32";

async function createContext(model, contextSize, batchSize = 512) {
  return model.createContext({
    contextSize,
    batchSize: Math.min(contextSize, batchSize),
    sequences: 1,
    threads: kThreads,
    flashAttention: kvType === "q8_0",
    experimentalKvCacheKeyType: kKvTypes[kvType],
    experimentalKvCacheValueType: kKvTypes[kvType],
  });
}

// Same ids llama.cpp's common_tokenize(..., add_special=true, parse_special=true) gives.
function tokenizeLikeLlamaCpp(model, text) {
  const ids = Array.from(model.tokenize(text, true));
  const addBos = model.tokens.shouldPrependBosToken;
  const addEos = model.tokens.shouldAppendEosToken;
  if (addBos) ids.unshift(model.tokens.bos);
  if (addEos) ids.push(model.tokens.eos);
  return {ids, add_bos: addBos, add_eos: addEos};
}

// probabilities: Map<id, p> sorted by p descending (as node-llama-cpp returns it).
function summarize(probabilities, chosen, topN) {
  const top = [];
  let second = null;
  let i = 0;
  for (const [id, p] of probabilities) {
    if (i < topN) top.push([id, Math.log(p)]);
    if (i === 1) second = Math.log(p);
    if (i >= Math.max(topN, 2)) break;
    i++;
  }
  const chosenP = probabilities.get(chosen);
  const logprob = chosenP == null ? null : Math.log(chosenP);
  return {
    logprob,
    // Margin between the best and the second-best token: where it is tiny the
    // argmax is decided by rounding, so a mismatch there is not a bug.
    margin: second == null ? null : top[0][1] - second,
    top,
  };
}

function finiteOrNull(x) {
  return Number.isFinite(x) ? x : null;
}

function cleanTop(top) {
  return top.map(([id, lp]) => [id, finiteOrNull(lp)]);
}

async function generateGreedy(seq, model, promptIds, n, topN) {
  await seq.clearHistory();
  const generated = [];
  let reason = "length";
  const iter = seq.evaluateWithMetadata(promptIds, {probabilities: true},
                                        {temperature: 0, yieldEogToken: true});
  for await (const out of iter) {
    const s = summarize(out.probabilities, out.token, topN);
    generated.push({
      id: out.token,
      text: model.detokenize([out.token], true),
      logprob: finiteOrNull(s.logprob),
      margin: finiteOrNull(s.margin),
      top: cleanTop(s.top),
    });
    if (model.isEogToken(out.token)) {
      reason = "eog";
      break;
    }
    if (generated.length >= n) break;
  }
  return {
    prompt_ids: promptIds,
    generated_ids: generated.map((g) => g.id),
    text: model.detokenize(generated.map((g) => g.id), false),
    finish_reason: reason,
    steps: generated,
  };
}

// Distributions at positions fromPos..n-1, all evaluated as one teacher-forced batch.
async function scoreSequence(seq, ids, topN, fromPos = 0) {
  await seq.clearHistory();
  const input = ids.map((id, i) => (i >= fromPos ? [id, {generateNext: {probabilities: true}}] : id));
  const outs = await seq.controlledEvaluate(input);
  const positions = [];
  for (let i = fromPos; i < ids.length; i++) {
    const probs = outs[i]?.next?.probabilities;
    if (probs == null) throw new Error(`no probabilities at position ${i}`);
    const nextId = i + 1 < ids.length ? ids[i + 1] : null;
    const s = summarize(probs, nextId ?? -1, topN);
    positions.push({
      pos: i,
      id: ids[i],
      top_logprobs: cleanTop(s.top),
      next_logprob: nextId == null ? null : finiteOrNull(s.logprob),
      margin: finiteOrNull(s.margin),
    });
  }
  return {ids, from_pos: fromPos, positions};
}

function contextSizeFor(promptLength, n) {
  // Room for the prompt and the continuation so no context shift ever happens.
  return Math.max(256, Math.ceil((promptLength + n + 16) / 256) * 256);
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  const args = parseArgs(rest);
  if (!args.model) throw new Error("--model is required");
  if (args["kv-type"] != null) {
    if (!(args["kv-type"] in kKvTypes)) throw new Error(`--kv-type must be one of ${Object.keys(kKvTypes)}`);
    kvType = args["kv-type"];
  }
  const n = Number(args.n ?? 64);
  const topN = Number(args.top ?? 10);
  const {llama, model} = await loadModel(args.model);
  let result;
  try {
    if (command === "tokenize") {
      const text = readText(args, "text", "text-file");
      if (text == null) throw new Error("tokenize needs --text or --text-file");
      result = tokenizeLikeLlamaCpp(model, text);
    } else if (command === "generate") {
      let promptIds;
      if (args["prompt-ids"] != null) {
        promptIds = parseIds(args["prompt-ids"]);
      } else {
        const text = readText(args, "prompt", "prompt-file");
        if (text == null) throw new Error("generate needs --prompt-ids, --prompt or --prompt-file");
        promptIds = tokenizeLikeLlamaCpp(model, text).ids;
      }
      const ctx = await createContext(model, contextSizeFor(promptIds.length, n));
      result = await generateGreedy(ctx.getSequence(), model, promptIds, n, topN);
      await ctx.dispose();
    } else if (command === "batch") {
      if (!args.jobs) throw new Error("batch needs --jobs FILE");
      const jobs = JSON.parse(fs.readFileSync(args.jobs, "utf8"));
      const prepared = jobs.map((job) => {
        if (job.prompt_ids != null) return {job, tokenize: null, ids: job.prompt_ids};
        if (job.text == null) throw new Error(`job ${job.name} has neither prompt_ids nor text`);
        const tok = tokenizeLikeLlamaCpp(model, job.text);
        return {job, tokenize: tok, ids: tok.ids};
      });
      const longest = Math.max(1, ...prepared.map((p) => p.ids.length));
      const ctx = await createContext(model, contextSizeFor(longest, n));
      const seq = ctx.getSequence();
      const results = [];
      for (const p of prepared) {
        const generate = await generateGreedy(seq, model, p.ids, n, topN);
        // The same continuation scored teacher-forced in one batch, as `llorch score`
        // does: llama.cpp's batched and one-token-at-a-time paths round differently
        // (quantised activations), and the gap between them is its own noise floor.
        const full = generate.prompt_ids.concat(generate.generated_ids);
        const teacherForced = await scoreSequence(seq, full, topN, Math.max(0, p.ids.length - 1));
        results.push({name: p.job.name, tokenize: p.tokenize, generate,
                      teacher_forced: teacherForced.positions});
      }
      await ctx.dispose();
      if (args.sequential === "1") {
        // Noise probe: the same teacher-forced scoring one token per batch. With
        // quantised weights ggml's kernels differ by batch shape, and the
        // quantised activations turn those last-bit differences into visible ones.
        const ctx1 = await createContext(model, contextSizeFor(longest, n), 1);
        const seq1 = ctx1.getSequence();
        for (const r of results) {
          const full = r.generate.prompt_ids.concat(r.generate.generated_ids);
          const fromPos = Math.max(0, r.generate.prompt_ids.length - 1);
          r.teacher_forced_sequential = (await scoreSequence(seq1, full, topN, fromPos)).positions;
        }
        await ctx1.dispose();
      }
      // Which CPU library ggml loaded (its features say which variant: AVX512 = 1 or not).
      result = {model: args.model, system_info: llama.systemInfo, results};
    } else if (command === "score") {
      if (args["prompt-ids"] == null) throw new Error("score needs --prompt-ids");
      const ids = parseIds(args["prompt-ids"]);
      const ctx = await createContext(model, contextSizeFor(ids.length, 0));
      result = await scoreSequence(ctx.getSequence(), ids, topN, Number(args.from ?? 0));
      await ctx.dispose();
    } else {
      throw new Error(`unknown command '${command}' (tokenize | generate | batch | score)`);
    }
  } finally {
    await model.dispose();
    await llama.dispose();
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
  process.stderr.write(`llama_peer: ${err?.stack ?? err}\n`);
  process.exit(1);
});
