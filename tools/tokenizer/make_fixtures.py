#!/usr/bin/env python3
"""Writes the small hand-made tokenizer.json fixtures in tests/tokenizer/fixtures/.

Each exercises a feature of the tokenizer layer with a vocabulary small enough
to reason about by hand; make_fixture_goldens.mjs then records what HF
tokenizers itself produces for them.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', '..', 'tests', 'tokenizer', 'fixtures')


def byte_chars():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def write(name, obj):
    with open(os.path.join(OUT, name), 'w', encoding='utf-8') as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write('\n')


def bytelevel(array_merges):
    bc = byte_chars()
    vocab = {bc[b]: b for b in range(256)}
    merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or', 'Ġwor l', 'Ġworl d', '1 2', '12 3', 'Ġ Ġ']
    for m in merges:
        a, b = m.split(' ')
        vocab.setdefault(a + b, len(vocab))
    added = [
        dict(id=len(vocab), content='<s>', special=True, normalized=False),
        dict(id=len(vocab) + 1, content='</s>', special=True, normalized=False),
        dict(id=len(vocab) + 2, content='<mask>', special=True, normalized=False, lstrip=True, rstrip=True),
        dict(id=len(vocab) + 3, content='cat', special=False, normalized=True, single_word=True),
        dict(id=len(vocab) + 4, content='[X]', special=False, normalized=False),
    ]
    for a in added:
        for k in ('single_word', 'lstrip', 'rstrip'):
            a.setdefault(k, False)
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': added,
        'normalizer': None,
        'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True},
        'post_processor': {
            'type': 'TemplateProcessing',
            'single': [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}},
                       {'SpecialToken': {'id': '</s>', 'type_id': 0}}],
            'pair': [{'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 1}}],
            'special_tokens': {
                '<s>': {'id': '<s>', 'ids': [added[0]['id']], 'tokens': ['<s>']},
                '</s>': {'id': '</s>', 'ids': [added[1]['id']], 'tokens': ['</s>']},
            },
        },
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': [m.split(' ') for m in merges] if array_merges else merges},
    }


def digits_nfc():
    chars = [' '] + [chr(c) for c in range(ord('a'), ord('z') + 1)] + [str(d) for d in range(10)] + ['é', 'ñ', '-']
    vocab = {'<unk>': 0}
    for c in chars:
        vocab[c] = len(vocab)
    merges = ['a b', 'ab c', '1 2']
    for m in merges:
        a, b = m.split(' ')
        vocab.setdefault(a + b, len(vocab))
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [dict(id=0, content='<unk>', special=True, normalized=False, lstrip=False, rstrip=False,
                              single_word=False)],
        'normalizer': {'type': 'Sequence', 'normalizers': [{'type': 'NFC'}, {'type': 'Lowercase'}]},
        'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [
            {'type': 'Split', 'pattern': {'String': ' '}, 'behavior': 'Removed', 'invert': False},
            {'type': 'Digits', 'individual_digits': True},
        ]},
        'post_processor': None,
        'decoder': None,
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': '<unk>', 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': merges},
    }


def nfkc_contiguous_digits():
    t = digits_nfc()
    t['normalizer'] = {'type': 'NFKC'}
    t['pre_tokenizer'] = {'type': 'Sequence', 'pretokenizers': [
        {'type': 'Split', 'pattern': {'Regex': '\\s+'}, 'behavior': 'Removed', 'invert': False},
        {'type': 'Digits', 'individual_digits': False},
    ]}
    return t


def byte_fallback():
    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
    for b in range(256):
        vocab['<0x%02X>' % b] = len(vocab)
    for t in ['▁', 'h', 'i', 'e', 'l', 'o', 'w', 'r', 'd', '▁h', '▁hi', 'll', '▁w']:
        vocab[t] = len(vocab)
    merges = [['▁', 'h'], ['▁h', 'i'], ['l', 'l'], ['▁', 'w']]
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [dict(id=i, content=c, special=True, normalized=False, lstrip=False, rstrip=False,
                              single_word=False) for c, i in (('<unk>', 0), ('<s>', 1), ('</s>', 2))],
        'normalizer': {'type': 'Sequence', 'normalizers': [
            {'type': 'Prepend', 'prepend': '▁'},
            {'type': 'Replace', 'pattern': {'String': ' '}, 'content': '▁'},
        ]},
        'pre_tokenizer': None,
        'post_processor': {
            'type': 'TemplateProcessing',
            'single': [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}],
            'pair': [{'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 1}}],
            'special_tokens': {'<s>': {'id': '<s>', 'ids': [1], 'tokens': ['<s>']}},
        },
        'decoder': {'type': 'Sequence', 'decoders': [
            {'type': 'Replace', 'pattern': {'String': '▁'}, 'content': ' '},
            {'type': 'ByteFallback'},
            {'type': 'Fuse'},
            {'type': 'Strip', 'content': ' ', 'start': 1, 'stop': 0},
        ]},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': '<unk>', 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': True, 'byte_fallback': True, 'ignore_merges': False,
                  'vocab': vocab, 'merges': merges},
    }


if __name__ == '__main__':
    os.makedirs(OUT, exist_ok=True)
    write('bytelevel.json', bytelevel(False))
    write('bytelevel_array_merges.json', bytelevel(True))
    write('digits_nfc.json', digits_nfc())
    write('nfkc_digits_contiguous.json', nfkc_contiguous_digits())
    write('byte_fallback.json', byte_fallback())
    write('bytelevel_config.json', {'bos_token': '<s>', 'eos_token': {'content': '</s>', '__type': 'AddedToken'},
                                    'chat_template': "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"})
