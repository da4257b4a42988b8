// llama.cpp's tokenizer as a reference, through node-llama-cpp.
//
//   node tokenize.mjs --model F.gguf --in strings.json --out result.json
//                     [--no-special] [--vocab-size N]
//
// Reads a JSON array of strings and writes
//   {"ids": [[...], ...], "decoded": [...], "eog_ids": [...]}
// ids: llama_tokenize(text, add_special=false, parse_special=!--no-special)
//      (node-llama-cpp's model.tokenize never adds BOS/EOS);
// decoded: llama_detokenize(ids, remove_special=false, unparse_special=false);
// eog_ids: every id < N for which llama.cpp reports end of generation
//          (only with --vocab-size N).
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

function parseArgs(argv) {
  const args = { special: true, vocabSize: 0 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--model") args.model = argv[++i];
    else if (arg === "--in") args.in = argv[++i];
    else if (arg === "--out") args.out = argv[++i];
    else if (arg === "--no-special") args.special = false;
    else if (arg === "--vocab-size") args.vocabSize = Number(argv[++i]);
    else throw new Error(`unknown argument: ${arg}`);
  }
  if (!args.model || !args.in || !args.out) {
    throw new Error("usage: tokenize.mjs --model F.gguf --in strings.json --out result.json " +
                    "[--no-special] [--vocab-size N]");
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const strings = JSON.parse(fs.readFileSync(args.in, "utf8"));
if (!Array.isArray(strings)) throw new Error(`${args.in}: expected a JSON array of strings`);

const llama = await getLlama({
  gpu: false, build: "never", maxThreads: 2, logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath: args.model, vocabOnly: true });

const ids = [];
const decoded = [];
for (const text of strings) {
  const tokens = Array.from(model.tokenize(text, args.special));
  ids.push(tokens);
  decoded.push(model.detokenize(tokens, false));
}
const eogIds = [];
for (let id = 0; id < args.vocabSize; id++) {
  if (model.isEogToken(id)) eogIds.push(id);
}
fs.writeFileSync(args.out, JSON.stringify({ ids, decoded, eog_ids: eogIds }) + "\n");
await model.dispose();
await llama.dispose();
