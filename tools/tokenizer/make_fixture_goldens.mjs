// Records what HF tokenizers (Rust, node binding) produces for the hand-made
// fixtures in tests/tokenizer/fixtures/ -> tests/tokenizer/goldens/fixtures.json.
//   cd tools/tokenizer && npm install && node make_fixture_goldens.mjs
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from 'tokenizers';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixDir = path.join(here, '../../tests/tokenizer/fixtures');
const out = path.join(here, '../../tests/tokenizer/goldens/fixtures.json');

const inputs = {
  'bytelevel.json': ['hello world', 'hello  world', 'hello<s>world</s>', 'a <mask> b', 'a<mask>b', 'x   <mask>   y',
                     'cat', 'a cat sat', 'concat', 'cats', 'cat_', '(cat)', 'cat!', '[X]y[X]', '123123 1234', 'héllo 日本',
                     '<mask><mask>', '  <mask>', '', '\n\n  \n'],
  'bytelevel_array_merges.json': ['hello world', 'hello<s>world</s>', '123123 1234', 'a <mask> b'],
  'digits_nfc.json': ['abc 2024', 'Cafe\u0301 ABC', 'ñ n\u0303', 'x-12-3', 'zz?', 'abcabc 1212', '  spaced   out  '],
  'nfkc_digits_contiguous.json': ['ｆｕｌｌ ２０２４', 'ab12cd345', 'ﬁ ½', 'x\t\ny'],
  'byte_fallback.json': ['hi', 'hi world', 'hello 日本', 'hi  hi', '😀', ' leading', '<s>hi</s>', 'hi\n'],
};

const golden = { made_by: 'tools/tokenizer/make_fixture_goldens.mjs', ids_from: 'tokenizers (HF Rust, node binding) 0.23.2', fixtures: {} };
for (const [file, texts] of Object.entries(inputs)) {
  const tok = Tokenizer.fromFile(path.join(fixDir, file));
  const rows = [];
  for (const text of texts) {
    const ids = Array.from((await tok.encode(text, null, { addSpecialTokens: true })).getIds());
    const idsNo = Array.from((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
    rows.push({ input: text, ids, ids_no_special: idsNo, decoded: await tok.decode(ids, false),
                decoded_skip_special: await tok.decode(ids, true) });
  }
  golden.fixtures[file] = rows;
}
fs.writeFileSync(out, JSON.stringify(golden, null, 1) + '\n');
console.log(`${out}: ${Object.keys(golden.fixtures).length} fixtures`);
