import Foundation
import ModelImport
import TestSupport
import Tokenizer

/// The default model's tokenizer description, the one place tests get it from: read straight out
/// of the default GGUF's metadata (the test command fetches it into the cache), so the reference
/// cases check the tokenizer against the vocabulary the reference tokenizer was built from.
func defaultTokenizerDescription() throws -> TokenizerDescription {
    let path = defaultGGUFPath().path
    guard FileManager.default.fileExists(atPath: path) else {
        throw TokenizerError("the default model's GGUF is missing at \(path): run tools/fetch-model default")
    }
    return try GGUFFile(path: path).tokenizerDescription()
}

/// Built once for all tests (building takes a fraction of a second).
private let sharedDefaultTokenizer = Result<Tokenizer, any Error> { try Tokenizer(description: defaultTokenizerDescription()) }

func defaultTokenizer() throws -> Tokenizer {
    try sharedDefaultTokenizer.get()
}
