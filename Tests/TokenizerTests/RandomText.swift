import TestSupport

/// Random strings that mix what trips tokenizers: scripts, whitespace runs (including Unicode
/// spaces and \r\n), emoji with ZWJ sequences and skin tones, combining marks, digits, contractions
/// and look-alikes of special tokens. Drawn from a seeded generator, so every run sees the same.
enum RandomText {
    static let fragments: [String] = [
        "the", " quick", " brown", "Fox", "'s", "'LL", "'", "don't", " I'm", "x", "Z",
        "0", "42", " 1234567", "3.14", "-7", "١٢٣", "१२३", "½", "Ⅻ",
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u{00A0}", "\u{3000}", "\u{2028}", "\u{0085}", "\u{000B}",
        ".", ",", "!!", "?", "...", "—", "«", "»", "(", ")", "{", "}", "[", "]", "<", ">", "/*", "*/", "=>", "#", "@", "_", "$",
        "é", "e\u{0301}", "ñ", "Łódź", "straße", "İ", "ǅ", "ẛ\u{0323}", "a\u{20DD}", "\u{0301}", "\u{0323}\u{0302}",
        "Привет", " мир", "Ελληνικά", "עברית", "العربية", "हिन्दी", "नमस्ते", "ไทย", "ภาษา",
        "中文", "你好世界", "日本語", "ひらがな", "カタカナ", "한국어", "안녕하세요",
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇮🇳", "1️⃣", "❤️", "🧑🏿‍💻", "\u{200D}", "\u{FE0F}",
        "𝔘𝔫𝔦", "𐍈", "𠀀", "\u{E000}", "\u{FFFD}",
        "<|im_start|>", "<|im_end|>", "<tool_call>", "<|endoftext|>", "<|", "|>",
        "func f(x: Int) -> Int { return x * 2 }", "if (a && b) { c++; }", "    ", "\t\t",
    ]

    static func string(_ rng: inout SeededGenerator, maxFragments: Int = 24) -> String {
        var s = ""
        for _ in 0..<Int.random(in: 1...maxFragments, using: &rng) {
            if Int.random(in: 0..<8, using: &rng) == 0 {
                s.unicodeScalars.append(randomScalar(&rng))
            } else {
                s += fragments.randomElement(using: &rng)!
            }
        }
        return s
    }

    /// A scalar from assorted assigned ranges (Latin-1 to supplementary planes).
    static func randomScalar(_ rng: inout SeededGenerator) -> Unicode.Scalar {
        let ranges: [ClosedRange<UInt32>] = [
            0x20...0x7E, 0xA0...0x24F, 0x300...0x36F, 0x370...0x3FF, 0x400...0x4FF, 0x590...0x6FF,
            0x900...0x97F, 0xE00...0xE7F, 0x1100...0x11FF, 0x2000...0x206F, 0x3000...0x30FF,
            0x4E00...0x9FFF, 0xAC00...0xD7A3, 0x1F300...0x1F64F, 0x1D400...0x1D7FF, 0x20000...0x2A6DF,
        ]
        let range = ranges.randomElement(using: &rng)!
        return Unicode.Scalar(UInt32.random(in: range, using: &rng))!
    }
}
