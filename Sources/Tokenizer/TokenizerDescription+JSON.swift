import Foundation

extension TokenizerDescription {
    /// Decodes the JSON form stored in the weight file header (the `Codable` shape: keys are the
    /// property names, nil optionals absent or null). A hand-written parser, because Foundation's
    /// JSONDecoder is slow on a 151k-token vocabulary with 151k merges (docs/decisions.md).
    /// Absent `merges`, `scores`, `tokenTypes`, `endOfTurnTokenIds` are empty; absent `addBosToken`
    /// is false and `addSpacePrefix` true; unknown keys are skipped.
    public static func decodeJSON(_ data: Data) throws -> TokenizerDescription {
        try data.withUnsafeBytes { raw in
            var parser = DescriptionJSONParser(raw.bindMemory(to: UInt8.self))
            return try parser.parseDescription()
        }
    }

    /// The JSON form `decodeJSON` reads (same shape as `JSONEncoder` would write).
    public func encodeJSON() throws -> Data {
        try JSONEncoder().encode(self)
    }
}

/// A minimal JSON reader for the description's shape: an object of strings, numbers, booleans,
/// nulls and arrays of those. Errors name the byte offset and what was expected.
struct DescriptionJSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0
    var stringBuffer: [UInt8] = []

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func fail(_ expected: String) -> TokenizerError {
        let found = i < bytes.count ? "'\(Character(Unicode.Scalar(bytes[i])))'" : "end of data"
        return TokenizerError("tokenizer description JSON: expected \(expected) at byte \(i), found \(found)")
    }

    mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    mutating func expect(_ b: UInt8, _ what: String) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == b else { throw fail(what) }
        i += 1
    }

    /// Consumes `b` if it is next (after whitespace).
    mutating func take(_ b: UInt8) -> Bool {
        skipSpace()
        if i < bytes.count && bytes[i] == b { i += 1; return true }
        return false
    }

    mutating func parseDescription() throws -> TokenizerDescription {
        var kind: TokenizerDescription.Kind?
        var preTokenizer: String?
        var tokens: [String]?
        var d = TokenizerDescription(kind: .byteLevelBPE, preTokenizer: "", tokens: [], tokenTypes: [])
        try expect(0x7B, "'{'")
        if !take(0x7D) {
            repeat {
                let key = try parseString()
                try expect(0x3A, "':'")
                switch key {
                case "kind":
                    let raw = try parseString()
                    guard let k = TokenizerDescription.Kind(rawValue: raw) else {
                        throw TokenizerError("tokenizer description JSON: expected kind \"bpe\" or \"spm\", found \"\(raw)\"")
                    }
                    kind = k
                case "preTokenizer": preTokenizer = try parseString()
                case "tokens": tokens = try parseArray { try $0.parseString() }
                case "tokenTypes": d.tokenTypes = try parseArray { try $0.parseInt() }
                case "merges": d.merges = try parseArray { try $0.parseString() }
                case "scores": d.scores = try parseArray { Float(try $0.parseDouble()) }
                case "bosTokenId": d.bosTokenId = try parseOptionalInt()
                case "eosTokenId": d.eosTokenId = try parseOptionalInt()
                case "padTokenId": d.padTokenId = try parseOptionalInt()
                case "unknownTokenId": d.unknownTokenId = try parseOptionalInt()
                case "endOfTurnTokenIds": d.endOfTurnTokenIds = try parseArray { try $0.parseInt() }
                case "addBosToken": d.addBosToken = try parseBool()
                case "addSpacePrefix": d.addSpacePrefix = try parseBool()
                default: try skipValue()
                }
            } while take(0x2C)
            try expect(0x7D, "',' or '}'")
        }
        guard let kind, let preTokenizer, let tokens else {
            throw TokenizerError(
                "tokenizer description JSON: expected keys kind, preTokenizer and tokens; "
                    + "found kind \(kind == nil ? "absent" : "present"), preTokenizer \(preTokenizer == nil ? "absent" : "present"), "
                    + "tokens \(tokens == nil ? "absent" : "present")")
        }
        d.kind = kind
        d.preTokenizer = preTokenizer
        d.tokens = tokens
        return d
    }

    mutating func parseArray<T>(_ element: (inout DescriptionJSONParser) throws -> T) throws -> [T] {
        try expect(0x5B, "'['")
        var out: [T] = []
        if take(0x5D) { return out }
        repeat { out.append(try element(&self)) } while take(0x2C)
        try expect(0x5D, "',' or ']'")
        return out
    }

    mutating func parseString() throws -> String {
        try expect(0x22, "a string")
        let start = i
        // Fast path: no escapes.
        while i < bytes.count && bytes[i] != 0x22 && bytes[i] != 0x5C { i += 1 }
        guard i < bytes.count else { throw fail("the end of a string") }
        if bytes[i] == 0x22 {
            i += 1
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(i - 1)]), as: UTF8.self)
        }
        stringBuffer.removeAll(keepingCapacity: true)
        stringBuffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while true {
            guard i < bytes.count else { throw fail("the end of a string") }
            let b = bytes[i]
            i += 1
            if b == 0x22 { break }
            if b != 0x5C { stringBuffer.append(b); continue }
            guard i < bytes.count else { throw fail("an escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case 0x22, 0x5C, 0x2F: stringBuffer.append(e)
            case 0x62: stringBuffer.append(0x08)
            case 0x66: stringBuffer.append(0x0C)
            case 0x6E: stringBuffer.append(0x0A)
            case 0x72: stringBuffer.append(0x0D)
            case 0x74: stringBuffer.append(0x09)
            case 0x75:
                var v = try parseHex4()
                if (0xD800..<0xDC00).contains(v), i + 1 < bytes.count, bytes[i] == 0x5C, bytes[i + 1] == 0x75 {
                    i += 2
                    let low = try parseHex4()
                    if (0xDC00..<0xE000).contains(low) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        appendScalar(0xFFFD)  // unpaired high surrogate
                        v = low
                    }
                }
                appendScalar(v)
            default:
                i -= 1
                throw fail("an escape character")
            }
        }
        return String(decoding: stringBuffer, as: UTF8.self)
    }

    mutating func parseHex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("4 hex digits") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[i]
            let d: UInt32
            switch b {
            case 0x30...0x39: d = UInt32(b - 0x30)
            case 0x41...0x46: d = UInt32(b - 0x41 + 10)
            case 0x61...0x66: d = UInt32(b - 0x61 + 10)
            default: throw fail("a hex digit")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    mutating func appendScalar(_ v: UInt32) {
        let scalar = Unicode.Scalar(v) ?? "\u{FFFD}"  // lone surrogates
        stringBuffer.append(contentsOf: String(scalar).utf8)
    }

    mutating func parseInt() throws -> Int {
        skipSpace()
        var negative = false
        if i < bytes.count && bytes[i] == 0x2D { negative = true; i += 1 }
        let start = i
        var v = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39, i - start < 18 {
            v = v * 10 + Int(bytes[i] - 0x30)
            i += 1
        }
        guard i > start else { throw fail("an integer") }
        if i < bytes.count, bytes[i] == 0x2E || bytes[i] == 0x65 || bytes[i] == 0x45 || (bytes[i] >= 0x30 && bytes[i] <= 0x39) {
            throw fail("an integer (no fraction, exponent or more than 18 digits)")
        }
        return negative ? -v : v
    }

    mutating func parseOptionalInt() throws -> Int? {
        skipSpace()
        if i + 4 <= bytes.count && bytes[i] == 0x6E && bytes[i + 1] == 0x75 && bytes[i + 2] == 0x6C && bytes[i + 3] == 0x6C {
            i += 4
            return nil
        }
        return try parseInt()
    }

    mutating func parseDouble() throws -> Double {
        skipSpace()
        let start = i
        while i < bytes.count, let c = Optional(bytes[i]),
            (c >= 0x30 && c <= 0x39) || c == 0x2D || c == 0x2B || c == 0x2E || c == 0x65 || c == 0x45
        { i += 1 }
        guard i > start, let v = Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)) else {
            throw fail("a number")
        }
        return v
    }

    mutating func parseBool() throws -> Bool {
        skipSpace()
        if i + 4 <= bytes.count && bytes[i] == 0x74 && bytes[i + 1] == 0x72 && bytes[i + 2] == 0x75 && bytes[i + 3] == 0x65 {
            i += 4
            return true
        }
        if i + 5 <= bytes.count && bytes[i] == 0x66 && bytes[i + 1] == 0x61 && bytes[i + 2] == 0x6C && bytes[i + 3] == 0x73
            && bytes[i + 4] == 0x65
        {
            i += 5
            return false
        }
        throw fail("true or false")
    }

    /// Skips any JSON value (for keys this version does not know).
    mutating func skipValue() throws {
        skipSpace()
        guard i < bytes.count else { throw fail("a value") }
        switch bytes[i] {
        case 0x22: _ = try parseString()
        case 0x5B:
            i += 1
            if take(0x5D) { return }
            repeat { try skipValue() } while take(0x2C)
            try expect(0x5D, "',' or ']'")
        case 0x7B:
            i += 1
            if take(0x7D) { return }
            repeat {
                _ = try parseString()
                try expect(0x3A, "':'")
                try skipValue()
            } while take(0x2C)
            try expect(0x7D, "',' or '}'")
        case 0x74, 0x66: _ = try parseBool()
        case 0x6E:
            guard i + 4 <= bytes.count else { throw fail("null") }
            i += 4
        default: _ = try parseDouble()
        }
    }
}
