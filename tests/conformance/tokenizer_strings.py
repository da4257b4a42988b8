"""Deterministic (seeded) tokenizer test strings: words, scripts, code,
whitespace runs, digits, emoji sequences and special-token texts mixed.

    tokenizer_strings.py [--seed S] [--count N] > strings.json
"""
import argparse
import json
import random

WORDS = ("the quick brown fox jumps over lazy dog hello world tokenizer model "
         "Llama SmolLM inference server request batch cache token stream "
         "don't it's we're they've I'm you'll she'd CAN'T WE'RE O'Neil "
         "naïve café résumé coöperate Zürich São Paulo").split()

SCRIPTS = {
    "greek": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο",
    "cyrillic": "Съешь же ещё этих мягких французских булок да выпей чаю",
    "chinese": "我想在苹果公司工作，今天天气很好。机器学习与自然语言处理",
    "japanese": "吾輩は猫である。名前はまだ無い。カタカナとひらがなテスト",
    "korean": "다람쥐 헌 쳇바퀴에 타고파 한국어 토큰화 시험입니다",
    "arabic": "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر",
    "hebrew": "דג סקרן שט בים מאוכזב ולפתע מצא חברה",
    "devanagari": "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश",
    "thai": "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
    "khmer": "កាន់តែពិសេសអាចខលចេញ",
    "armenian": "Բել դղյակի ձախ ժամն օֆ ազգությանը ցպահանջ չճշտած",
    "georgian": "სწრაფი ყავისფერი მელა ხტება ზარმაც ძაღლზე",
}

EMOJI = ["🦙", "🚀", "😁", "✅", "❤️", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "😶‍🌫️", "🇺🇸", "🇯🇵",
         "1️⃣", "#️⃣", "🧑🏿‍💻", "👩‍❤️‍💋‍👨", "🐈‍⬛", "©️", "☺", "🫠", "🤷‍♀️"]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<reponame>", "<file_sep>",
            "<jupyter_code>", "<|im_", "im_end|>", "< |im_end|>", "<|IM_END|>",
            "<|im_start|><|im_start|>", "</s>", "<s>", "<|eot_id|>"]

CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    '{"key": [1, 2.5, -3e10, null, true], "k2": {"x": "y"}}',
    "#include <vector>\nint main() { std::vector<int> v{1,2,3}; }\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "   if (a && b || !c) { x->y = z[0]; }\r\n",
    "const re = /^\\s+|\\s+$/g; console.log(`${a}+${b}`);",
    "<div class=\"x\"><a href='https://example.com/?q=1&r=2'>link</a></div>",
    "x = [i for i in range(10) if i % 2 == 0]\n\n\nprint(x)",
    "$ echo \"hello\" | sed 's/l/L/g' >> out.txt 2>&1",
]

WHITESPACE = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n",
              "\r\n", " \n", "\n ", " \t\n ", "\u00a0", "\u3000", "\u2009", "\u2003",
              "\u200b", "\u2028", "\u0085", "\x0b", "\x0c", "\r"]

DIGITS = ["3", "33", "333", "3333", "33333", "1234567890", "3.14159", "1,000,000",
          "2024-11-05", "12:34:56", "0x1F", "1e-9", "٣٤٥", "１２３", "²", "½", "①②",
          "Ⅻ", "९८७"]

MISC = ["!!!", "...", "?!", "--", "—", "–", "…", "«»", "„“", "''", '"', "'s", "'S", "'ll",
        "'LL", "'re", "'Ve", "'d", "'M", "'t", "e\u0301", "a\u0308o\u0308", "ﬁ", "Å",
        "\x01\x02", "\x1b[31m", "\x7f", "￿", "\U00010348", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ǅ", "ß", "İ",
        "@user", "user@example.com", "https://huggingface.co/HuggingFaceTB/SmolLM2",
        "**bold** _it_ `code` # Title", "- [x] done\n- [ ] todo"]


def piece(rng):
    kind = rng.randrange(9)
    if kind == 0:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
    if kind == 1:
        text = rng.choice(list(SCRIPTS.values()))
        start = rng.randrange(len(text))
        return text[start:start + rng.randint(1, 20)]
    if kind == 2:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    if kind == 3:
        return rng.choice(SPECIALS)
    if kind == 4:
        code = rng.choice(CODE)
        start = rng.randrange(len(code))
        return code[start:start + rng.randint(5, 60)]
    if kind == 5:
        return rng.choice(WHITESPACE) * rng.randint(1, 3)
    if kind == 6:
        return rng.choice(DIGITS) if rng.random() < 0.6 else str(rng.randrange(10 ** rng.randint(1, 15)))
    if kind == 7:
        return rng.choice(MISC)
    # Random code points from a few blocks (Latin-1, Greek, CJK, symbols).
    blocks = [(0x20, 0x7e), (0xa0, 0x17f), (0x370, 0x3ff), (0x4e00, 0x4fff),
              (0x2000, 0x206f), (0x2190, 0x23ff), (0x1f300, 0x1f5ff), (0xac00, 0xacff)]
    lo, hi = rng.choice(blocks)
    return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))


def generate(seed, count):
    rng = random.Random(seed)
    strings = [""]
    # Every fixed entry once on its own, then random mixtures.
    for group in (list(SCRIPTS.values()), EMOJI, SPECIALS, CODE, WHITESPACE, DIGITS, MISC):
        strings.extend(group)
    while len(strings) < count:
        parts = [piece(rng) for _ in range(rng.randint(1, 6))]
        joiner = rng.choice(["", " ", "\n", ""])
        text = joiner.join(parts)
        if rng.random() < 0.2:
            text = rng.choice(WHITESPACE) + text
        if rng.random() < 0.2:
            text += rng.choice(WHITESPACE)
        strings.append(text)
    return strings


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=20241105)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    print(json.dumps(generate(args.seed, args.count), ensure_ascii=True))


if __name__ == "__main__":
    main()
