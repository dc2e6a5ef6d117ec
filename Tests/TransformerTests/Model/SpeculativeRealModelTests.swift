// Greedy speculative decoding on the real models (0.5B drafting for 1.5B with the longest drafts;
// prompt lookup alone with the longest; both with the cost rule's k) must give the 1.5B model's own greedy
// tokens, token for token: the reference is the plain Generator on the 1.5B alone (prompt, then one
// token per step). Exact, near-ties included: a verification's k + 1 rows stay within
// `QuantKernels.rowInvariantRows`, where each row is computed bitwise as a one-token step.
import Foundation
import Tensor
import TestSupport
import Tokenizer
import Transformer
import XCTest

final class SpeculativeRealModelTests: XCTestCase {
    static var largePath: String {
        repositoryRoot().appendingPathComponent("weights/qwen2.5-coder-1.5b-instruct.sarvam").path
    }

    /// Code and chat prompts (ChatML, as the server renders them).
    static let prompts: [String] = [
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "import Foundation\n\n/// Reverses the words of a sentence.\nfunc reverseWords(_ s: String) -> String {\n",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            + "Write a Python function that checks whether a string is a palindrome.<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nExplain what a hash map is in two sentences.<|im_end|>\n<|im_start|>assistant\n",
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
        // An edit: the answer repeats the code, so prompt lookup drafts most of it.
        "<|im_start|>user\nAdd a docstring to each function and show the whole code.\n\n```python\n"
            + "def area(width, height):\n    return width * height\n\n"
            + "def perimeter(width, height):\n    return 2 * (width + height)\n```<|im_end|>\n<|im_start|>assistant\n",
    ]

    /// The target's logits after `prompt` + `forced` computed as the plain Generator does: the
    /// prompt in one step, then one token per step.
    private func plainLogits(_ model: Model, _ cache: KVCache, prompt: [Int], forced: [Int]) throws -> [Float] {
        let seq = cache.makeSequence()
        defer { cache.release(seq) }
        var logits = try model.forward([SequenceInput(sequence: seq, tokens: prompt, logits: .last)])
        for t in forced { logits = try model.forward([SequenceInput(sequence: seq, tokens: [t], logits: .last)]) }
        return Array(logits.last(entry: 0)!)
    }

    func testGreedyEqualsTheTargetAlone() throws {
        guard FileManager.default.fileExists(atPath: Self.largePath) else {
            throw XCTSkip("\(Self.largePath) is missing (`tools/fetch-model large` fetches the 1.5B model): no target to verify against")
        }
        let draftPath = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: draftPath) else {
            XCTFail("missing \(draftPath): run `tools/fetch-model default`")
            return
        }
        let pool = ThreadPool(threads: 2)
        let targetFile = try WeightFile.open(Self.largePath, verify: false)
        let draftFile = try WeightFile.open(draftPath, verify: false)
        let target = try Model(file: targetFile, pool: pool)
        let draft = try Model(file: draftFile, pool: pool)
        let tokenizer = try Tokenizer(json: targetFile.description.tokenizer)
        // As `sarvam serve` drafts: the logits of the leading and special ids only.
        draft.draftVocabulary = try XCTUnwrap(
            DraftVocabulary.standard(
                vocabularySize: draft.configuration.vocabSize, tokenCount: tokenizer.vocabularySize,
                specialIds: tokenizer.specialTokenIds))
        let targetCache = try target.makeCache(memoryBudget: 64 << 20, contextLength: 1024)
        let draftCache = try draft.makeCache(memoryBudget: 32 << 20, contextLength: 1024)
        let plain = Generator(model: target, cache: targetCache)
        let longest = try SpeculativeGenerator(target: target, targetCache: targetCache, draft: draft, draftCache: draftCache)
        longest.fixedDraftLength = DraftLength.rowInvariantMaximum
        let lookupOnly = try SpeculativeGenerator(target: target, targetCache: targetCache, lookup: PromptLookup())
        lookupOnly.fixedDraftLength = DraftLength.rowInvariantMaximum
        let both = try SpeculativeGenerator(
            target: target, targetCache: targetCache, draft: draft, draftCache: draftCache, lookup: PromptLookup())
        let parameters = GenerationParameters(maxTokens: 128, sampling: .greedy)

        var total = SpeculativeStats(), totalLookup = SpeculativeStats(), totalBoth = SpeculativeStats()
        /// Speculative generation (both configurations) must give `expected` (the plain tokens after
        /// `prompt`) and stop the same way. At a difference the message says how far apart the
        /// target's own logits (the plain path) put the two tokens.
        func compare(_ label: String, prompt: [Int], expected: GenerationResult, parameters: GenerationParameters) throws {
            try compare(label + ", longest drafts", longest, prompt: prompt, expected: expected, parameters: parameters, into: &total)
            try compare(label + ", lookup", lookupOnly, prompt: prompt, expected: expected, parameters: parameters, into: &totalLookup)
            try compare(label + ", lookup and draft", both, prompt: prompt, expected: expected, parameters: parameters, into: &totalBoth)
        }
        func compare(
            _ label: String, _ speculative: SpeculativeGenerator, prompt: [Int], expected: GenerationResult,
            parameters: GenerationParameters, into total: inout SpeculativeStats
        ) throws {
            let got = try speculative.generate(prompt: prompt, parameters: parameters)
            total = total + got.speculation
            if let i = zip(got.generation.tokens, expected.tokens).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                let row = try plainLogits(target, targetCache, prompt: prompt, forced: Array(expected.tokens[..<i]))
                XCTFail(
                    "\(label), token \(i): \(got.generation.tokens[i]) instead of \(expected.tokens[i]) "
                        + "(the target alone puts them \(row[expected.tokens[i]] - row[got.generation.tokens[i]]) apart)")
                return
            }
            XCTAssertEqual(got.generation.tokens, expected.tokens, label)
            XCTAssertEqual(got.generation.stopReason, expected.stopReason, label)
        }
        for (n, text) in Self.prompts.enumerated() {
            let prompt = tokenizer.encodeTrusted(template: text)
            let expected = try plain.generate(prompt: prompt, parameters: parameters)
            XCTAssertEqual(expected.tokens.count, 128)
            try compare("prompt \(n)", prompt: prompt, expected: expected, parameters: parameters)
        }
        // A stop token ends both the same way, and is not reported.
        let chat = tokenizer.encodeTrusted(template: Self.prompts[3])
        let imEnd = tokenizer.encodeTrusted(template: "<|im_end|>")
        let stopping = GenerationParameters(maxTokens: 128, sampling: .greedy, stopTokenIds: Set(imEnd))
        let stopped = try plain.generate(prompt: chat, parameters: stopping)
        guard case .stopToken = stopped.stopReason else { return XCTFail("the chat prompt's reply should end with <|im_end|>") }
        try compare("stopping chat", prompt: chat, expected: stopped, parameters: stopping)

        for (name, t) in [("longest drafts", total), ("lookup", totalLookup), ("lookup and draft", totalBoth)] {
            print(
                "speculative greedy, \(name): acceptance \(t.acceptanceRate), tokens per verification \(t.tokensPerVerification), "
                    + "\(t.verifications) verifications, \(t.lookupDraftedTokens) lookup drafts")
        }
        // The drafts must have been used at all (a draft never kept would still be "exact"), with
        // verifications of several rows, and lookup drafts kept too (the fixed-length runs are
        // deterministic; the cost rule's k depends on measured timings, so only "some" there).
        XCTAssertGreaterThan(total.acceptanceRate, 0.3)
        XCTAssertGreaterThan(total.tokensPerVerification, 2)
        XCTAssertGreaterThan(totalLookup.lookupAcceptedTokens, 50)
        XCTAssertGreaterThan(totalBoth.draftedTokens, 0)
    }
}
