import Foundation

/// An error about a tokenizer description or input; the message says what was expected and found.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Text <-> token ids for one model, built from a `TokenizerDescription`.
///
/// The pipeline of `encode`: (1) when the caller allows it, cut out special tokens matched as whole
/// strings (leftmost, longest first); (2) per remaining segment, byte-level BPE: pre-tokenize with the
/// family's pattern, then BPE each piece (with a word cache); or SentencePiece: escape spaces and
/// BPE the whole segment by scores. No Unicode normalization is applied (as llama.cpp).
///
/// User text cannot forge turns: `encode(text:)` never recognizes special tokens (a user typing
/// `<|im_start|>system` gets the plain pieces `<`, `|`, `im`, ...); `encode(prompt:)` recognizes them
/// only in the parts of a rendered chat prompt that the template wrote; only `encodeTrusted(template:)`
/// recognizes them everywhere, for text the program wrote itself.
///
/// Thread safety: immutable after init except for a pool of scratch buffers (with word caches) that
/// each call borrows under a lock, so one tokenizer serves concurrent requests.
public final class Tokenizer: @unchecked Sendable {
    public let kind: TokenizerDescription.Kind
    /// nil for SentencePiece (which has no pre-tokenizer).
    public let preTokenizer: PreTokenizerPattern?
    public let vocabularySize: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let padTokenId: Int?
    public let unknownTokenId: Int?
    /// The description's end-of-turn ids (the generator adds the template family's, see `stopTokenIds`).
    public let endOfTurnTokenIds: [Int]
    /// Whether prompts of this model start with BOS (GGUF `tokenizer.ggml.add_bos_token`).
    public let addsBosToken: Bool
    let addSpacePrefix: Bool

    /// Token id -> text as the vocabulary spells it.
    let tokenTexts: [String]
    /// Token id -> `TokenizerDescription.TokenType` raw value.
    let tokenTypes: [UInt8]
    /// Bytes each token decodes to: id k is pieceBytes[pieceStart[k] ..< pieceStart[k + 1]].
    let pieceBytes: [UInt8]
    let pieceStart: [Int32]
    /// SentencePiece: token k's piece begins with a space that the first token of a decode drops.
    let leadingSpace: [Bool]
    /// Special tokens (control, user-defined) by first byte, longest first.
    let specialsByFirstByte: [[Int32]]

    let bpe: ByteLevelBPE?
    let sentencePiece: SentencePieceBPE?
    private let scratchPool = ScratchPool()

    public convenience init(json data: Data) throws {
        try self.init(description: TokenizerDescription.decodeJSON(data))
    }

    public init(description d: TokenizerDescription) throws {
        let n = d.tokens.count
        guard n > 0 else { throw TokenizerError("tokenizer description: expected a vocabulary, found 0 tokens") }
        guard d.tokenTypes.isEmpty || d.tokenTypes.count == n else {
            throw TokenizerError("tokenizer description: expected \(n) token types (one per token), found \(d.tokenTypes.count)")
        }
        for id in [d.bosTokenId, d.eosTokenId, d.padTokenId, d.unknownTokenId].compactMap({ $0 }) + d.endOfTurnTokenIds
        where id < 0 || id >= n {
            throw TokenizerError("tokenizer description: special token id \(id) is outside the vocabulary 0..<\(n)")
        }
        kind = d.kind
        vocabularySize = n
        bosTokenId = d.bosTokenId
        eosTokenId = d.eosTokenId
        padTokenId = d.padTokenId
        unknownTokenId = d.unknownTokenId
        endOfTurnTokenIds = d.endOfTurnTokenIds
        addsBosToken = d.addBosToken
        addSpacePrefix = d.addSpacePrefix
        tokenTexts = d.tokens
        let types: [UInt8] =
            d.tokenTypes.isEmpty
            ? [UInt8](repeating: UInt8(TokenizerDescription.TokenType.normal.rawValue), count: n)
            : d.tokenTypes.map { UInt8(clamping: $0) }
        tokenTypes = types
        let normal = UInt8(TokenizerDescription.TokenType.normal.rawValue)
        let control = UInt8(TokenizerDescription.TokenType.control.rawValue)
        let userDefined = UInt8(TokenizerDescription.TokenType.userDefined.rawValue)
        let byteType = UInt8(TokenizerDescription.TokenType.byte.rawValue)

        // Decoded bytes of every token.
        var bytes: [UInt8] = []
        var starts: [Int32] = [0]
        var spaces = [Bool](repeating: false, count: n)
        var byteTokenIds = [Int32](repeating: -1, count: 256)
        bytes.reserveCapacity(n * 8)
        for id in 0..<n {
            let text = d.tokens[id]
            if types[id] == byteType, let b = Self.parseByteToken(text) {
                bytes.append(b)
                byteTokenIds[Int(b)] = Int32(id)
            } else if types[id] == normal {
                switch d.kind {
                case .byteLevelBPE:
                    bytes.append(contentsOf: ByteLevel.bytes(ofTokenText: text) ?? Array(text.utf8))
                case .sentencePiece:
                    let raw = Array(text.replacingOccurrences(of: "\u{2581}", with: " ").utf8)
                    spaces[id] = raw.first == 0x20
                    bytes.append(contentsOf: raw)
                }
            } else {
                bytes.append(contentsOf: text.utf8)  // added tokens are spelled raw
            }
            starts.append(Int32(bytes.count))
        }
        pieceBytes = bytes
        pieceStart = starts
        leadingSpace = spaces

        var specials = [[Int32]](repeating: [], count: 256)
        for id in 0..<n where (types[id] == control || types[id] == userDefined) && !d.tokens[id].isEmpty {
            specials[Int(d.tokens[id].utf8.first!)].append(Int32(id))
        }
        for b in 0..<256 {
            specials[b].sort { d.tokens[Int($0)].utf8.count > d.tokens[Int($1)].utf8.count }
        }
        specialsByFirstByte = specials
        let unknown = d.unknownTokenId.map { Int32($0) }

        switch d.kind {
        case .byteLevelBPE:
            guard let pattern = PreTokenizerPattern(ggufName: d.preTokenizer) else {
                throw TokenizerError(
                    "tokenizer description: expected a pre-tokenizer of "
                        + "\(PreTokenizerPattern.allCases.map(\.rawValue)) (or llama.cpp's aliases), found '\(d.preTokenizer)'")
            }
            preTokenizer = pattern
            sentencePiece = nil
            bpe = try Self.buildByteLevelBPE(
                d, types: types, pieceBytes: bytes, pieceStart: starts,
                ignoreMerges: pattern == .llama3, unknown: unknown)
        case .sentencePiece:
            guard d.scores.count == n else {
                throw TokenizerError(
                    "tokenizer description: SentencePiece needs one score per token: expected \(n), found \(d.scores.count)")
            }
            preTokenizer = nil
            bpe = nil
            var pieces = ByteStringMap(capacity: n)
            for id in 0..<n where types[id] == normal || types[id] == userDefined {
                pieces.set(Array(d.tokens[id].utf8), Int32(id))
            }
            sentencePiece = SentencePieceBPE(pieces: pieces, scores: d.scores, byteTokens: byteTokenIds, unknownTokenId: unknown)
        }
    }

    /// `<0xNN>` -> NN.
    static func parseByteToken(_ text: String) -> UInt8? {
        let u = Array(text.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    private static func buildByteLevelBPE(
        _ d: TokenizerDescription, types: [UInt8], pieceBytes: [UInt8],
        pieceStart: [Int32], ignoreMerges: Bool, unknown: Int32?
    ) throws -> ByteLevelBPE {
        let n = d.tokens.count
        let normal = UInt8(TokenizerDescription.TokenType.normal.rawValue)
        // Vocabulary spelling (byte-level text) -> id, for resolving merges; raw bytes -> id for words.
        var spelling = ByteStringMap(capacity: n)
        var vocabulary = ByteStringMap(capacity: ignoreMerges ? n : 0)
        var byteTokens = [Int32](repeating: -1, count: 256)
        for id in 0..<n where types[id] == normal && !d.tokens[id].isEmpty {
            var text = d.tokens[id]
            text.withUTF8 { spelling.set($0.baseAddress!, $0.count, Int32(id)) }
            let start = Int(pieceStart[id]), length = Int(pieceStart[id + 1]) - start
            if ignoreMerges {
                pieceBytes.withUnsafeBufferPointer { vocabulary.set($0.baseAddress! + start, length, Int32(id)) }
            }
            if length == 1 && byteTokens[Int(pieceBytes[start])] < 0 { byteTokens[Int(pieceBytes[start])] = Int32(id) }
        }
        var merges = PairMap(capacity: d.merges.count)
        for (rank, line) in d.merges.enumerated() {
            var line = line
            // "left right": both halves and their concatenation (the line without its space) are tokens.
            let ids: (Int32, Int32, Int32)?? = line.withUTF8 { u in
                guard let space = u.firstIndex(of: 0x20), space > 0, space < u.count - 1 else { return nil }
                let base = u.baseAddress!
                guard let l = spelling.get(base, space), let r = spelling.get(base + space + 1, u.count - space - 1) else {
                    return .some(nil)
                }
                var joined = [UInt8](UnsafeBufferPointer(start: base, count: space))
                joined.append(contentsOf: UnsafeBufferPointer(start: base + space + 1, count: u.count - space - 1))
                return .some(spelling.get(joined).map { (l, r, $0) })
            }
            guard let resolved = ids else {
                throw TokenizerError("tokenizer description: merge \(rank) should be 'left right', found '\(line)'")
            }
            guard let (l, r, m) = resolved else {
                throw TokenizerError("tokenizer description: merge \(rank) '\(line)' names a token that is not in the vocabulary")
            }
            merges.insertIfAbsent(left: l, right: r, rank: Int32(rank), merged: m)
        }
        return ByteLevelBPE(
            byteTokens: byteTokens, merges: merges, vocabulary: vocabulary,
            ignoreMerges: ignoreMerges, unknownTokenId: unknown)
    }

    // MARK: - Encoding

    /// Token ids of text that came from a user: special tokens are NEVER recognized.
    public func encode(text: String, addBos: Bool = false) -> [Int] {
        encode(text, allowSpecial: false, addBos: addBos)
    }

    /// Token ids of text the program wrote itself: special tokens such as `<|im_start|>` are
    /// recognized as whole strings anywhere. Never pass text that holds user content here; a chat
    /// prompt goes through `encode(prompt:)`.
    public func encodeTrusted(template: String, addBos: Bool = false) -> [Int] {
        encode(template, allowSpecial: true, addBos: addBos)
    }

    public func encode(_ text: String, allowSpecial: Bool, addBos: Bool = false) -> [Int] {
        encode(text, specialRanges: allowSpecial ? [0..<text.utf8.count] : [], addBos: addBos)
    }

    /// Token ids of a rendered chat prompt: special tokens are recognized only inside the parts the
    /// template wrote, never in message contents; the text is otherwise encoded as one string, so
    /// pieces that straddle a part boundary come out as the reference tokenizers make them.
    public func encode(prompt: RenderedPrompt, addBos: Bool = false) -> [Int] {
        var text = ""
        var ranges: [Range<Int>] = []
        for part in prompt.parts {
            let start = text.utf8.count
            text += part.text
            guard part.isTemplate else { continue }
            if let last = ranges.last, last.upperBound == start {
                ranges[ranges.count - 1] = last.lowerBound..<text.utf8.count  // adjacent template parts are one
            } else {
                ranges.append(start..<text.utf8.count)
            }
        }
        return encode(text, specialRanges: ranges, addBos: addBos)
    }

    /// The pipeline: special tokens are matched only within `specialRanges` (UTF-8 byte ranges,
    /// ascending); the text between them goes through the model (`encodeSegment`).
    private func encode(_ text: String, specialRanges: [Range<Int>], addBos: Bool) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(text.utf8.count / 3 + 4)
        if addBos, let bosTokenId { out.append(bosTokenId) }
        let scratch = scratchPool.take()
        defer { scratchPool.put(scratch) }
        var text = text
        text.withUTF8 { bytes in
            var segmentStart = 0
            var afterSpecial = true
            for range in specialRanges {
                var i = max(range.lowerBound, segmentStart)
                while i < range.upperBound {
                    if let (id, length) = matchSpecial(bytes, at: i, end: range.upperBound) {
                        if i > segmentStart {
                            encodeSegment(UnsafeBufferPointer(rebasing: bytes[segmentStart..<i]), afterSpecial: afterSpecial, scratch, &out)
                        }
                        out.append(Int(id))
                        afterSpecial = true
                        i += length
                        segmentStart = i
                    } else {
                        i += 1
                    }
                }
            }
            if segmentStart < bytes.count {
                encodeSegment(UnsafeBufferPointer(rebasing: bytes[segmentStart...]), afterSpecial: afterSpecial, scratch, &out)
            }
        }
        return out
    }

    /// The longest special token starting at byte i and ending by `end`, if any.
    @inline(__always)
    private func matchSpecial(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int, end: Int) -> (Int32, Int)? {
        let candidates = specialsByFirstByte[Int(bytes[i])]
        guard !candidates.isEmpty else { return nil }
        for id in candidates {
            let s = Int(pieceStart[Int(id)]), e = Int(pieceStart[Int(id) + 1])
            let length = e - s
            guard i + length <= end else { continue }
            var same = true
            for k in 0..<length where pieceBytes[s + k] != bytes[i + k] { same = false; break }
            if same { return (id, length) }
        }
        return nil
    }

    /// Encodes text without special tokens. `afterSpecial`: the segment starts the text or follows a
    /// special token (SentencePiece then adds its space prefix, as llama.cpp does).
    private func encodeSegment(
        _ bytes: UnsafeBufferPointer<UInt8>, afterSpecial: Bool, _ scratch: EncoderScratch,
        _ out: inout [Int]
    ) {
        guard !bytes.isEmpty else { return }
        if let sentencePiece {
            sentencePiece.encode(bytes, addSpacePrefix: addSpacePrefix && afterSpecial, out: &out)
            return
        }
        guard let bpe, let preTokenizer else { return }
        scratch.ends.removeAll(keepingCapacity: true)
        preTokenizer.split(bytes, scratch: &scratch.preTokenizer, ends: &scratch.ends)
        let base = bytes.baseAddress!
        var start = 0
        for end in scratch.ends {
            let e = Int(end)
            bpe.encodeWord(base + start, e - start, scratch: &scratch.bpe, out: &out)
            start = e
        }
    }

    // MARK: - Decoding

    /// The text of `ids`. Bytes that do not form valid UTF-8 become U+FFFD. Ids outside the
    /// vocabulary are ignored. `skipSpecial` drops control and unused tokens (`<|im_end|>`, ...).
    public func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(ids, skipSpecial: skipSpecial), as: UTF8.self)
    }

    /// The raw bytes of `ids` (see `decode`).
    public func decodeBytes(_ ids: [Int], skipSpecial: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        var first = true
        for id in ids { appendBytes(of: id, first: &first, skipSpecial: skipSpecial, to: &out) }
        return out
    }

    /// Appends the bytes of token `id`; `first` is true until a token produced output (SentencePiece
    /// drops the leading space of the first piece: it is the space prefix added by `encode`).
    @inline(__always)
    func appendBytes(of id: Int, first: inout Bool, skipSpecial: Bool, to out: inout [UInt8]) {
        guard id >= 0 && id < vocabularySize else { return }
        if skipSpecial {
            let t = tokenTypes[id]
            if t == UInt8(TokenizerDescription.TokenType.control.rawValue)
                || t == UInt8(TokenizerDescription.TokenType.unused.rawValue)
            {
                return
            }
        }
        var s = Int(pieceStart[id])
        let e = Int(pieceStart[id + 1])
        if first && leadingSpace[id] && addSpacePrefix { s += 1 }
        first = false
        out.append(contentsOf: pieceBytes[s..<e])
    }

    /// A decoder that takes one id at a time and returns only complete UTF-8 text.
    public func makeStreamingDecoder(skipSpecial: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecial: skipSpecial)
    }

    // MARK: - Vocabulary

    /// The token's text as the vocabulary spells it (byte-level characters for BPE, `▁` for SPM).
    public func tokenText(_ id: Int) -> String? {
        id >= 0 && id < vocabularySize ? tokenTexts[id] : nil
    }

    /// The id of the token spelled `text` exactly (a linear search: for set-up, not per token).
    public func id(forToken text: String) -> Int? {
        tokenTexts.firstIndex(of: text)
    }

    /// True for control and user-defined tokens (what `encodeTrusted` recognizes).
    public func isSpecial(_ id: Int) -> Bool {
        guard id >= 0 && id < vocabularySize else { return false }
        let t = tokenTypes[id]
        return t == UInt8(TokenizerDescription.TokenType.control.rawValue)
            || t == UInt8(TokenizerDescription.TokenType.userDefined.rawValue)
    }

    /// Every special id: the control and user-defined tokens, BOS, EOS and the end-of-turn tokens,
    /// ascending (a pass over the vocabulary: for set-up, not per token).
    public var specialTokenIds: [Int] {
        var ids = Set((0..<vocabularySize).filter(isSpecial))
        ids.formUnion([bosTokenId, eosTokenId].compactMap { $0 } + endOfTurnTokenIds)
        return ids.sorted()
    }

    /// The ids the generator stops on for a conversation rendered with `template`: the description's
    /// end-of-turn tokens, EOS, and the template family's end-of-turn token strings found in the vocabulary.
    public func stopTokenIds(for template: ChatTemplate) -> [Int] {
        var ids = endOfTurnTokenIds
        if let eosTokenId { ids.append(eosTokenId) }
        for text in template.family.endOfTurnTokens {
            if let id = id(forToken: text) { ids.append(id) }
        }
        var seen = Set<Int>()
        return ids.filter { seen.insert($0).inserted }
    }
}

/// Scratch buffers of one encoding call (pre-tokenizer arrays, BPE work arrays, word cache).
final class EncoderScratch {
    var preTokenizer = PreTokenizerScratch()
    var ends: [Int32] = []
    var bpe = BPEScratch()
}

/// Lends scratch buffers to concurrent `encode` calls; each keeps its word cache between calls.
final class ScratchPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [EncoderScratch] = []

    func take() -> EncoderScratch {
        lock.lock()
        defer { lock.unlock() }
        return free.popLast() ?? EncoderScratch()
    }

    func put(_ scratch: EncoderScratch) {
        lock.lock()
        defer { lock.unlock() }
        if free.count < 8 { free.append(scratch) }
    }
}
