import ArgumentParser
import Foundation
import Tokenizer
import Transformer

/// Where every command looks for a model when given no `--model`: `SARVAM_MODEL`, else the default
/// model that `tools/fetch-model default` converts into `weights/`.
enum DefaultModel {
    static let relativePath = "weights/qwen2.5-coder-0.5b-instruct.sarvam"
    /// The heavy tier (`tools/fetch-model large`), served beside the default one when present.
    static let largeRelativePath = "weights/qwen2.5-coder-1.5b-instruct.sarvam"

    static var path: String { ProcessInfo.processInfo.environment["SARVAM_MODEL"] ?? relativePath }

    /// `path` if given, else the default; a missing file is a usage error saying how to get one.
    static func resolve(_ path: String?) throws -> String {
        let resolved = path ?? Self.path
        guard FileManager.default.fileExists(atPath: resolved) else {
            if path == nil {
                throw ValidationError(
                    "no model at \(resolved): fetch the default model with `tools/fetch-model default`, or pass --model PATH")
            }
            throw ValidationError("no model at \(resolved) (expected a Sarvam weight file; convert one with `sarvam convert`)")
        }
        return resolved
    }
}

/// The tokenizer stored in a weight file (the default model's when `modelPath` is nil).
func loadTokenizer(modelPath: String?) throws -> Tokenizer {
    let file = try WeightFile.open(DefaultModel.resolve(modelPath), verify: false)
    return try Tokenizer(json: file.description.tokenizer)
}
