/// Decodes token ids one at a time into text, returning only complete UTF-8: a character whose bytes
/// are split across tokens is held back until its last byte arrives. Bytes that can never become
/// valid are replaced by U+FFFD exactly as `Tokenizer.decode` replaces them, so the concatenation of
/// everything `append` and `finish` return equals `decode` of all the ids.
///
/// Why that holds: text is cut only before a lead byte (never inside a sequence), and a UTF-8
/// decoder is always at a sequence boundary before a lead byte, so decoding the pieces separately
/// replaces exactly the same bytes as decoding the whole.
public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let skipSpecial: Bool
    private var pending: [UInt8] = []  // bytes not yet returned: at most one incomplete sequence + new token bytes
    private var first = true

    init(tokenizer: Tokenizer, skipSpecial: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    public mutating func append(_ id: Int) -> String {
        tokenizer.appendBytes(of: id, first: &first, skipSpecial: skipSpecial, to: &pending)
        let keep = Self.incompleteSuffixLength(pending)
        guard pending.count > keep else { return "" }
        let text = String(decoding: pending[..<(pending.count - keep)], as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return text
    }

    /// Ends the stream: whatever is held back is invalid and comes out as U+FFFD.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of the trailing bytes that are a proper prefix of a valid UTF-8 sequence (0...3): those
    /// must wait for more bytes. Validity of a prefix follows the Unicode table of well-formed
    /// sequences (E0 needs A0...BF next, ED 80...9F, F0 90...BF, F4 80...8F; C0, C1, F5...FF never lead).
    static func incompleteSuffixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var k = n - 1
        // Find the last non-continuation byte among the last 4.
        while k >= 0 && k >= n - 4 && bytes[k] & 0xC0 == 0x80 { k -= 1 }
        guard k >= 0 && k >= n - 4 else { return 0 }
        let lead = bytes[k]
        let need: Int
        switch lead {
        case 0xC2...0xDF: need = 2
        case 0xE0...0xEF: need = 3
        case 0xF0...0xF4: need = 4
        default: return 0
        }
        let have = n - k
        guard have < need else { return 0 }
        if have >= 2 {
            let second = bytes[k + 1]
            let range: ClosedRange<UInt8>
            switch lead {
            case 0xE0: range = 0xA0...0xBF
            case 0xED: range = 0x80...0x9F
            case 0xF0: range = 0x90...0xBF
            case 0xF4: range = 0x80...0x8F
            default: range = 0x80...0xBF
            }
            guard range.contains(second) else { return 0 }
        }
        return have
    }
}
