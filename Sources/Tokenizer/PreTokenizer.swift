/// The pre-tokenizers of the byte-level BPE families: the text is cut into pieces ("words") by a
/// regular expression, and BPE runs inside each piece. Each pattern is implemented as a hand-written
/// scanner equivalent to the regex (leftmost alternative wins, as in the regex engines), working on
/// Unicode scalars decoded from UTF-8 and classified by `ScalarClass`.
///
/// - `qwen2`:  `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// - `llama3`: the same with `\p{N}{1,3}` instead of `\p{N}`.
/// - `gpt2`:   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
public enum PreTokenizerPattern: String, Sendable, CaseIterable {
    case qwen2, llama3, gpt2

    /// The pattern for a GGUF `tokenizer.ggml.pre` name (llama.cpp's names and ours), or nil.
    public init?(ggufName name: String) {
        switch name {
        case "qwen2", "deepseek-r1-qwen": self = .qwen2
        case "llama3", "llama-bpe", "smaug-bpe": self = .llama3
        case "gpt2", "gpt-2", "default": self = .gpt2
        default: return nil
        }
    }

    /// The regular expression this scanner implements (for documentation and test oracles).
    public var regex: String {
        let contractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
        switch self {
        case .qwen2:
            return contractions + #"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        case .llama3:
            return contractions + #"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        case .gpt2:
            return #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        }
    }

    /// The pieces `text` is cut into (for tests and debugging; `Tokenizer` uses `split`).
    public func pieces(of text: String) -> [String] {
        var text = text
        var scratch = PreTokenizerScratch()
        var ends: [Int32] = []
        return text.withUTF8 { bytes in
            split(bytes, scratch: &scratch, ends: &ends)
            var start = 0
            return ends.map { end in
                defer { start = Int(end) }
                return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<Int(end)]), as: UTF8.self)
            }
        }
    }

    /// Splits `text`, valid UTF-8 of n bytes, and appends the end byte offset of every piece to
    /// `ends` (the pieces are contiguous: piece k is ends[k-1] ..< ends[k], the first starts at 0).
    func split(_ text: UnsafeBufferPointer<UInt8>, scratch: inout PreTokenizerScratch, ends: inout [Int32]) {
        guard let t = text.baseAddress, text.count > 0 else { return }
        let count = scratch.load(text)
        let classes = UnsafePointer(scratch.classes), offsets = UnsafePointer(scratch.offsets)
        var i = 0
        while i < count {
            let j: Int
            switch self {
            case .qwen2: j = Self.nextLlama3Style(t, classes, offsets, i, count, maxDigits: 1)
            case .llama3: j = Self.nextLlama3Style(t, classes, offsets, i, count, maxDigits: 3)
            case .gpt2: j = Self.nextGPT2(t, classes, offsets, i, count)
            }
            ends.append(offsets[j])
            i = j
        }
    }

    /// End (scalar index) of a contraction `'s 't 're 've 'm 'll 'd` starting at scalar i, or nil.
    /// An ASCII byte at a scalar's offset is the whole scalar (multi-byte scalars start at >= 0xC0).
    @inline(__always)
    static func contraction(
        _ t: UnsafePointer<UInt8>, _ o: UnsafePointer<Int32>, _ i: Int, _ n: Int,
        ignoreCase: Bool
    ) -> Int? {
        guard t[Int(o[i])] == 0x27, i + 1 < n else { return nil }
        func lower(_ k: Int) -> UInt8 {
            let v = t[Int(o[k])]
            return ignoreCase && v >= 0x41 && v <= 0x5A ? v | 0x20 : v
        }
        switch lower(i + 1) {
        case 0x73, 0x74, 0x6D, 0x64: return i + 2  // s t m d
        case 0x72, 0x76: return i + 2 < n && lower(i + 2) == 0x65 ? i + 3 : nil  // re ve
        case 0x6C: return i + 2 < n && lower(i + 2) == 0x6C ? i + 3 : nil  // ll
        default: return nil
        }
    }

    /// One match of the qwen2 / llama3 pattern at scalar i; returns its end.
    @inline(__always)
    static func nextLlama3Style(
        _ t: UnsafePointer<UInt8>, _ c: UnsafePointer<UInt8>, _ o: UnsafePointer<Int32>,
        _ i: Int, _ n: Int, maxDigits: Int
    ) -> Int {
        let k = c[i]
        let nextClass = i + 1 < n ? c[i + 1] : 0xFF
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if k == ScalarClass.letter || ((k == ScalarClass.other || k == ScalarClass.space) && nextClass == ScalarClass.letter) {
            if k == ScalarClass.other, let j = contraction(t, o, i, n, ignoreCase: true) { return j }
            var j = i + 1
            while j < n && c[j] == ScalarClass.letter { j += 1 }
            return j
        }
        // \p{N} or \p{N}{1,3}
        if k == ScalarClass.number {
            var j = i + 1
            while j < n && j - i < maxDigits && c[j] == ScalarClass.number { j += 1 }
            return j
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        if k == ScalarClass.other || (t[Int(o[i])] == 0x20 && nextClass == ScalarClass.other) {
            var j = k == ScalarClass.other ? i + 1 : i + 2
            while j < n && c[j] == ScalarClass.other { j += 1 }
            while j < n && c[j] == ScalarClass.newline { j += 1 }
            return j
        }
        // Whitespace run i..<end. `\s*[\r\n]+` backtracks to the last newline of the run;
        // `\s+(?!\S)` leaves the run's last scalar to the next piece unless the text ends;
        // `\s+` takes a lone whitespace scalar.
        var end = i + 1
        var lastNewline = k == ScalarClass.newline ? i : -1
        while end < n && (c[end] == ScalarClass.space || c[end] == ScalarClass.newline) {
            if c[end] == ScalarClass.newline { lastNewline = end }
            end += 1
        }
        if lastNewline >= 0 { return lastNewline + 1 }
        if end == n || end - i == 1 { return end }
        return end - 1
    }

    /// One match of the GPT-2 pattern at scalar i; returns its end.
    @inline(__always)
    static func nextGPT2(
        _ t: UnsafePointer<UInt8>, _ c: UnsafePointer<UInt8>, _ o: UnsafePointer<Int32>,
        _ i: Int, _ n: Int
    ) -> Int {
        if c[i] == ScalarClass.other, let j = contraction(t, o, i, n, ignoreCase: false) { return j }
        var k = c[i]
        var j = i
        if t[Int(o[i])] == 0x20 && i + 1 < n && c[i + 1] != ScalarClass.space && c[i + 1] != ScalarClass.newline {
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the space joins the run that follows it.
            j = i + 1
            k = c[j]
        }
        if k == ScalarClass.letter || k == ScalarClass.number || k == ScalarClass.other {
            j += 1
            while j < n && c[j] == k { j += 1 }
            return j
        }
        var end = i + 1
        while end < n && (c[end] == ScalarClass.space || c[end] == ScalarClass.newline) { end += 1 }
        if end == n || end - i == 1 { return end }
        return end - 1
    }
}

/// Per-call buffers of the pre-tokenizer, reused across calls: one entry per scalar of the text.
/// Raw memory (not arrays) because filling them is the pre-tokenizer's inner loop.
struct PreTokenizerScratch: ~Copyable {
    private(set) var capacity = 0
    var classes = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)  // ScalarClass of scalar k
    var offsets = UnsafeMutablePointer<Int32>.allocate(capacity: 1)  // byte offset of scalar k; offsets[count] = byte length

    deinit {
        classes.deallocate()
        offsets.deallocate()
    }

    /// Decodes valid UTF-8 (a Swift String's bytes) into the two arrays; returns the scalar count.
    mutating func load(_ text: UnsafeBufferPointer<UInt8>) -> Int {
        let n = text.count
        if capacity < n + 1 {
            classes.deallocate()
            offsets.deallocate()
            capacity = max(n + 1, 2 * capacity)
            classes = .allocate(capacity: capacity)
            offsets = .allocate(capacity: capacity)
        }
        let t = text.baseAddress!
        var i = 0
        var count = 0
        ScalarClass.basicPlane.withUnsafeBufferPointer { plane in
            while i < n {
                let b0 = UInt32(t[i])
                offsets[count] = Int32(i)
                if b0 < 0x80 {
                    classes[count] = plane[Int(b0)]
                    i += 1
                } else if b0 < 0xE0 {
                    classes[count] = plane[Int((b0 & 0x1F) << 6 | UInt32(t[i + 1] & 0x3F))]
                    i += 2
                } else if b0 < 0xF0 {
                    classes[count] = plane[Int((b0 & 0x0F) << 12 | UInt32(t[i + 1] & 0x3F) << 6 | UInt32(t[i + 2] & 0x3F))]
                    i += 3
                } else {
                    let v = (b0 & 0x07) << 18 | UInt32(t[i + 1] & 0x3F) << 12 | UInt32(t[i + 2] & 0x3F) << 6 | UInt32(t[i + 3] & 0x3F)
                    classes[count] = ScalarClass.of(v)
                    i += 4
                }
                count += 1
            }
        }
        offsets[count] = Int32(n)
        return count
    }
}
