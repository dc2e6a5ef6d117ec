import ArgumentParser
import Foundation
import Tokenizer

/// `sarvam tokenize`: text on standard input -> token ids, so the tokenizer can be checked from
/// outside against any reference tokenizer.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of the text on standard input as a JSON array.",
        discussion: """
            The whole input is one text, encoded exactly as read (a final newline is part of it).
            With --jsonl each input line is a JSON object {"text": "..."} and each output line is
            {"ids": [...]}, in order. Special tokens such as <|im_start|> are recognized only with
            --special; without it every character is plain text, as for user input.
            """)

    @Option(name: .long, help: "The Sarvam weight file whose tokenizer to use (default: the default model).")
    var model: String?

    @Flag(name: .long, help: "Recognize special tokens (control and user-defined) as whole strings.")
    var special = false

    @Flag(name: .long, help: "Read JSON lines {\"text\": ...}; write one {\"ids\": [...]} line per input line.")
    var jsonl = false

    func run() throws {
        let tokenizer = try loadTokenizer(modelPath: model)
        let encode: (String) -> [Int] =
            special
            ? { tokenizer.encodeTrusted(template: $0) }
            : { tokenizer.encode(text: $0) }
        if jsonl {
            struct Input: Decodable { var text: String }
            struct Output: Encodable { var ids: [Int] }
            try forEachJSONLine(Input.self, expected: #"{"text": string}"#) { input in
                try writeJSONLine(Output(ids: encode(input.text)))
            }
        } else {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            guard let text = String(data: data, encoding: .utf8) else {
                throw TokenizerError("expected UTF-8 text on standard input, found bytes that are not valid UTF-8")
            }
            let ids = encode(text)
            print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        }
    }
}

/// `sarvam detokenize`: token ids on standard input -> text.
struct DetokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detokenize",
        abstract: "Print the text of the JSON array of token ids on standard input.",
        discussion: """
            Writes the decoded text exactly (no newline is added). Bytes that do not form valid
            UTF-8 become U+FFFD. With --jsonl each input line is {"ids": [...]} and each output
            line is {"text": "..."}, in order.
            """)

    @Option(name: .long, help: "The Sarvam weight file whose tokenizer to use (default: the default model).")
    var model: String?

    @Flag(name: .long, help: "Leave out control tokens such as <|im_end|>.")
    var skipSpecial = false

    @Flag(name: .long, help: "Read JSON lines {\"ids\": [...]}; write one {\"text\": ...} line per input line.")
    var jsonl = false

    func run() throws {
        let tokenizer = try loadTokenizer(modelPath: model)
        if jsonl {
            struct Input: Decodable { var ids: [Int] }
            struct Output: Encodable { var text: String }
            try forEachJSONLine(Input.self, expected: #"{"ids": [integer, ...]}"#) { input in
                try writeJSONLine(Output(text: tokenizer.decode(input.ids, skipSpecial: skipSpecial)))
            }
        } else {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            let ids: [Int]
            do {
                ids = try JSONDecoder().decode([Int].self, from: data)
            } catch {
                throw TokenizerError(
                    "expected a JSON array of token ids on standard input, e.g. [9707, 11], found "
                        + String(decoding: data.prefix(80), as: UTF8.self).debugDescription)
            }
            FileHandle.standardOutput.write(Data(tokenizer.decode(ids, skipSpecial: skipSpecial).utf8))
        }
    }
}

/// Calls `body` with each non-empty line of standard input decoded as `T`; a line that does not
/// decode stops with an error naming the line and the expected shape.
private func forEachJSONLine<T: Decodable>(_ type: T.Type, expected: String, _ body: (T) throws -> Void) throws {
    let decoder = JSONDecoder()
    var number = 0
    while let line = readLine(strippingNewline: true) {
        number += 1
        if line.allSatisfy(\.isWhitespace) { continue }
        let value: T
        do {
            value = try decoder.decode(T.self, from: Data(line.utf8))
        } catch {
            throw TokenizerError("standard input line \(number): expected \(expected), found \(String(line.prefix(80)).debugDescription)")
        }
        try body(value)
    }
}

private func writeJSONLine<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    var data = try encoder.encode(value)
    data.append(0x0A)
    FileHandle.standardOutput.write(data)
}
