/// GPT-2's byte-level alphabet: every byte 0...255 is spelled as one printable Unicode scalar so that
/// byte-level BPE vocabularies can be stored as text. Printable Latin-1 bytes (`!`...`~`, `¡`...`¬`,
/// `®`...`ÿ`) stand for themselves; the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) are
/// moved, in byte order, to U+0100, U+0101, ... (so the space 0x20 is `Ġ` U+0120, `\n` is `Ċ` U+010A).
enum ByteLevel {
    /// byte -> scalar value of its stand-in. [256]
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var moved: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + moved
                moved += 1
            }
        }
        return table
    }()

    /// stand-in scalar value (< 0x144) -> byte, or -1 for scalars that stand for no byte. [0x144]
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (b, s) in byteToScalar.enumerated() { table[Int(s)] = Int16(b) }
        return table
    }()

    /// The raw bytes a byte-level token text stands for, or nil when the text holds a scalar outside
    /// the alphabet (such a token can never be produced from bytes; added tokens are spelled raw).
    static func bytes(ofTokenText text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            let v = Int(scalar.value)
            guard v < scalarToByte.count, scalarToByte[v] >= 0 else { return nil }
            out.append(UInt8(scalarToByte[v]))
        }
        return out
    }
}
