// `bench generate --draft`: one stream of speculative decoding (the draft proposes, the measured
// model verifies) on fixed code prompts at temperature 0, 128 tokens each, beside plain decoding of
// the same prompts by the measured model alone in the same run, so their ratio is honest. Decode
// speed counts the tokens after the first over the time after the first (as GenerationStats).
// Before reporting, the greedy tokens of both are compared (they must be the same).
import Foundation
import Tensor
import Tokenizer
import Transformer

enum SpeculativeBench {
    static let prompts: [String] = [
        "def quicksort(items):\n    \"\"\"Sort a list with quicksort and return a new list.\"\"\"\n",
        "import Foundation\n\n/// A thread-safe counter.\nfinal class Counter {\n",
        "<|im_start|>user\nWrite a Python function that parses a CSV file and returns the rows as dictionaries.<|im_end|>\n"
            + "<|im_start|>assistant\n",
        "<|im_start|>user\nWrite a Swift function that returns the prime numbers below n.<|im_end|>\n<|im_start|>assistant\n",
    ]
    static let tokens = 128

    struct Result {
        var plainTokensPerSecond = 0.0
        var speculativeTokensPerSecond = 0.0
        var stats = SpeculativeStats()
        var identicalPrompts = 0
        var prompts = 0
    }

    static func measure(target targetPath: String, draft draftPath: String, pool: ThreadPool) throws -> Result {
        let targetFile = try WeightFile.open(targetPath, verify: false)
        let draftFile = try WeightFile.open(draftPath, verify: false)
        let target = try Model(file: targetFile, pool: pool)
        let draft = try Model(file: draftFile, pool: pool)
        let tokenizer = try Tokenizer(json: targetFile.description.tokenizer)
        let targetCache = try target.makeCache(memoryBudget: 64 << 20, contextLength: 1024)
        let draftCache = try draft.makeCache(memoryBudget: 64 << 20, contextLength: 1024)
        let plain = Generator(model: target, cache: targetCache)
        let speculative = try SpeculativeGenerator(target: target, targetCache: targetCache, draft: draft, draftCache: draftCache)
        let parameters = GenerationParameters(maxTokens: tokens, sampling: .greedy)

        var result = Result()
        var plainTokens = 0, plainSeconds = 0.0, specTokens = 0, specSeconds = 0.0
        for text in prompts {
            let prompt = tokenizer.encodeTrusted(template: text)
            let a = try plain.generate(prompt: prompt, parameters: parameters)
            let b = try speculative.generate(prompt: prompt, parameters: parameters)
            plainTokens += a.stats.generatedTokens - 1
            plainSeconds += a.stats.generationSeconds
            specTokens += b.generation.stats.generatedTokens - 1
            specSeconds += b.generation.stats.generationSeconds
            result.stats.verifications += b.speculation.verifications
            result.stats.draftedTokens += b.speculation.draftedTokens
            result.stats.acceptedTokens += b.speculation.acceptedTokens
            if a.tokens == b.generation.tokens { result.identicalPrompts += 1 }
            result.prompts += 1
        }
        result.plainTokensPerSecond = Double(plainTokens) / plainSeconds
        result.speculativeTokensPerSecond = Double(specTokens) / specSeconds
        withExtendedLifetime((targetFile, draftFile)) {}
        return result
    }
}
