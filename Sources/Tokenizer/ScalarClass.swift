/// The character classes the pre-tokenizer patterns distinguish, per Unicode scalar (code point, not
/// grapheme cluster, exactly as the regex engines of the reference tokenizers see text).
/// Letters are `\p{L}` (general categories Lu Ll Lt Lm Lo), numbers `\p{N}` (Nd Nl No), whitespace
/// `\s` is the Unicode White_Space property, split into `\r`/`\n` and the rest.
enum ScalarClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 3  // \s other than \r and \n
    static let newline: UInt8 = 4  // \r or \n

    /// Classes of the Basic Multilingual Plane, built once from the standard library's Unicode data
    /// (about 65k property look-ups, a few milliseconds). [0x10000]
    static let basicPlane: [UInt8] = (0..<0x10000).map { v in
        Unicode.Scalar(UInt32(v)).map(compute) ?? other  // surrogates never occur in a String
    }

    @inline(__always)
    static func of(_ value: UInt32) -> UInt8 {
        if value < 0x10000 { return basicPlane[Int(value)] }
        return Unicode.Scalar(value).map(compute) ?? other
    }

    static func compute(_ scalar: Unicode.Scalar) -> UInt8 {
        if scalar == "\r" || scalar == "\n" { return newline }
        let properties = scalar.properties
        if properties.isWhitespace { return space }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return other
        }
    }
}
