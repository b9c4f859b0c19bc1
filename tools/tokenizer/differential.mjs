// Differential check (not part of the test suite): random strings encoded by
// HF tokenizers (Rust, node binding), written in the goldens format so the
// C++ tests can compare against them:
//   node differential.mjs OUT_SRC_DIR [COUNT] [SEED]
// then run tokenizer_test with SHARDLM_SOURCE_DIR=OUT_SRC_DIR and
// --gtest_filter='Real*Encode*:Real*Decode*:Real*Streaming*'.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from 'tokenizers';

const here = path.dirname(fileURLToPath(import.meta.url));
const outSrc = path.resolve(process.argv[2] ?? '/tmp/shardlm_diff');
const count = Number(process.argv[3] ?? 2000);
let seed = Number(process.argv[4] ?? 1);
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = (a) => a[Math.floor(rand() * a.length)];
const tokDir = process.env.SHARDLM_HF_TOKENIZERS_DIR ?? path.join(here, '../../tests/data/hf_tokenizers');

const pieces = [
  () => pick(['the', 'The', 'THE', 'hello', 'world', 'tokenizer', "it's", "DON'T", "we'll", "they'RE", 'x', 'I']),
  () => pick([' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\r', '\u000b', '\f', '\u0085', '\u00a0', '\u2028', '\u3000', '\u180e', '\ufeff', '\u200b', ' \n ']),
  () => String(Math.floor(rand() * 10 ** Math.floor(rand() * 12))),
  () => pick(['.', ',', '!', '?', '...', '--', '(', ')', '[', ']', '{', '}', '"', "'", '`', '#', '$', '%', '&', '*', '+', '=', '<', '>', '/', '\\', '|', '~', '^', '_', '@', ';', ':']),
  () => pick(['深度', '学习', '東京', 'ひらがな', 'カタカナ', '한국어', 'Привет', 'مرحبا', 'שלום', 'नमस्ते', 'Γειά', 'สวัสดี']),
  () => pick(['👋', '🌍', '👨‍👩‍👧‍👦', '🇺🇸', '👍🏽', '❤️', '🤖', '✨']),
  () => pick(['e\u0301', 'a\u0308', 'n\u0303', 'Z\u0351\u0337', 'ﬁ', 'ｆｕｌｌ', 'Å', 'A\u030a', 'ſ', 'İ', 'ß']),
  () => String.fromCodePoint(0x20 + Math.floor(rand() * 0xD7E0)),
  () => String.fromCodePoint(0x10000 + Math.floor(rand() * 0x20000)),
  () => pick(['<|begin_of_text|>', '<|eot_id|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>', '<|endoftext|>', '<tool_call>', '<|im_start', 'im_end|>']),
];

fs.mkdirSync(path.join(outSrc, 'tests/tokenizer/goldens'), { recursive: true });
for (const name of ['llama3', 'qwen3']) {
  const rust = Tokenizer.fromFile(path.join(tokDir, name, 'tokenizer.json'));
  const config = JSON.parse(fs.readFileSync(path.join(tokDir, name, 'tokenizer_config.json'), 'utf8'));
  const rows = [];
  for (let k = 0; k < count; k++) {
    let text = '';
    const n = 1 + Math.floor(rand() * 30);
    for (let j = 0; j < n; j++) text += pick(pieces)();
    const ids = Array.from((await rust.encode(text, null, { addSpecialTokens: true })).getIds());
    const idsNo = Array.from((await rust.encode(text, null, { addSpecialTokens: false })).getIds());
    const decoded = await rust.decode(ids, false);
    rows.push({ name: `random_${k}`, input_hex: Buffer.from(text, 'utf8').toString('hex'), ids, ids_no_special: idsNo,
                decoded, decoded_skip_special: await rust.decode(ids, true), decoded_transformers: decoded });
  }
  const golden = { encode: rows, chat: [], config: { bos_token: config.bos_token ?? null, eos_token: config.eos_token ?? null,
                                                       clean_up_tokenization_spaces: false } };
  fs.writeFileSync(path.join(outSrc, 'tests/tokenizer/goldens', `${name}.json`), JSON.stringify(golden));
  console.log(`${name}: ${rows.length} random strings`);
}
