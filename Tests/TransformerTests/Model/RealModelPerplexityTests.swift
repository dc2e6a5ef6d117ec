// Perplexity of the GPL-3 text (Debian's /usr/share/common-licenses/GPL-3) at ctx 512, computed as
// llama.cpp's perplexity tool does, against what that tool reports for the default GGUF (5.310): the
// default conversion within 1%, int8 within 2%; int4 within 6%. The int4 mixes measured against
// this bound, and why a lower weight error did not mean a lower perplexity here, are in
// docs/decisions.md.
import Foundation
import Tensor
import TestSupport
import Tokenizer
import Transformer
import XCTest

final class RealModelPerplexityTests: XCTestCase {
    /// The text llama.cpp's reference perplexity (Tests/Fixtures/generation.json) was measured on:
    /// the GPL-3 as Debian's base-files package ships it, on every Debian system.
    static let textPath = "/usr/share/common-licenses/GPL-3"
    static let textBytes = 35_149

    private func check(variant: String?, tolerance: Double) throws {
        let reference = try loadGenerationReference()
        guard let data = FileManager.default.contents(atPath: Self.textPath) else {
            throw XCTSkip("\(Self.textPath) is missing (Debian's base-files installs it): no perplexity text on this system")
        }
        guard data.count == Self.textBytes else {
            throw XCTSkip(
                "\(Self.textPath) has \(data.count) bytes, not the \(Self.textBytes) of the text the llama.cpp reference was measured on")
        }
        var text = String(decoding: data, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }  // llama.cpp's -f drops one trailing newline
        let (model, weights) = try loadDefaultModel(variant: variant)
        let tokenizer = try Tokenizer(json: weights.description.tokenizer)
        let tokens = tokenizer.encode(text: text, addBos: tokenizer.addsBosToken)
        let ctx = reference.perplexity_reference.ctx
        let result = try Perplexity.evaluate(
            model: model, tokens: tokens, context: ctx,
            bosTokenId: tokenizer.addsBosToken ? tokenizer.bosTokenId : nil)
        let expected = reference.perplexity_reference.llama_cpp_q4_k_m_ppl
        let relative = abs(result.perplexity - expected) / expected
        print(
            "perplexity \(variant ?? "default"): \(result.perplexity) ± \(result.standardError) over \(result.chunks) chunks (llama.cpp \(expected), off by \(relative * 100)%)"
        )
        XCTAssertLessThanOrEqual(relative, tolerance, "\(variant ?? "default"): perplexity \(result.perplexity), llama.cpp \(expected)")
    }

    /// The default conversion keeps the GGUF's values (Q5_0 → int5, Q4_K → int4, Q8_0 → int8 exactly;
    /// Q6_K → int8 exactly where its scales allow): measured 5.3275 (+0.33%).
    func testDefaultPerplexityMatchesLlamaCpp() throws { try check(variant: nil, tolerance: 0.01) }
    func testInt8PerplexityMatchesLlamaCpp() throws { try check(variant: "int8", tolerance: 0.02) }
    func testInt4PerplexityMatchesLlamaCpp() throws { try check(variant: "int4", tolerance: 0.06) }
}
