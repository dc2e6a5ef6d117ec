// `bench generate --draft` / `--lookup`: one stream of speculative decoding at temperature 0,
// 128 tokens per prompt, beside plain decoding of the same prompts by the measured model alone in
// the same run, so their ratios are honest. Two prompt sets: code written from a request (the
// draft model's case) and code edits (the answer repeats much of the prompt: prompt lookup's case).
// Configurations: the draft model alone, the lookup alone, and both (lookup when it matches, else
// the draft). Decode speed counts the tokens after the first over the time after the first (as
// GenerationStats). Before reporting, the greedy tokens of each are compared with plain decoding's
// (they must be the same).
import ArgumentParser
import Foundation
import Tensor
import Tokenizer
import Transformer

enum SpeculativeBench {
    static func chat(_ request: String) -> String {
        "<|im_start|>user\n\(request)<|im_end|>\n<|im_start|>assistant\n"
    }

    static let codePrompts: [String] = [
        "def quicksort(items):\n    \"\"\"Sort a list with quicksort and return a new list.\"\"\"\n",
        "import Foundation\n\n/// A thread-safe counter.\nfinal class Counter {\n",
        chat("Write a Python function that parses a CSV file and returns the rows as dictionaries."),
        chat("Write a Swift function that returns the prime numbers below n."),
    ]

    static let editPrompts: [String] = [
        chat(
            """
            Add type hints to this Python code and return the whole code.

            ```python
            import csv

            def load_rows(path, delimiter=","):
                rows = []
                with open(path, newline="") as f:
                    reader = csv.DictReader(f, delimiter=delimiter)
                    for row in reader:
                        rows.append(row)
                return rows

            def total(rows, column):
                result = 0.0
                for row in rows:
                    value = row.get(column)
                    if value:
                        result += float(value)
                return result

            def by_key(rows, key):
                groups = {}
                for row in rows:
                    groups.setdefault(row[key], []).append(row)
                return groups
            ```
            """),
        chat(
            """
            Rename the struct `Item` to `Product` in this Swift code and show the full result.

            ```swift
            struct Item {
                var name: String
                var price: Double
                var quantity: Int
            }

            func total(of items: [Item]) -> Double {
                items.reduce(0) { $0 + $1.price * Double($1.quantity) }
            }

            func cheapest(_ items: [Item]) -> Item? {
                items.min { $0.price < $1.price }
            }

            func restock(_ items: inout [Item], minimum: Int) {
                for i in items.indices where items[i].quantity < minimum {
                    items[i].quantity = minimum
                }
            }
            ```
            """),
        chat(
            """
            Convert this JavaScript to TypeScript with types for every parameter.

            ```javascript
            function createUser(name, email, age) {
              return { name: name, email: email, age: age, createdAt: new Date() };
            }

            function isAdult(user) {
              return user.age >= 18;
            }

            function findByEmail(users, email) {
              return users.find((user) => user.email === email);
            }

            function averageAge(users) {
              if (users.length === 0) return 0;
              return users.reduce((sum, user) => sum + user.age, 0) / users.length;
            }
            ```
            """),
    ]
    static let tokens = 128

    /// `--draft-vocabulary`: which logits the draft model computes.
    enum DraftVocabularyChoice: String, ExpressibleByArgument {
        case standard, all
    }

    /// One configuration over one prompt set.
    struct Run {
        var tokensPerSecond = 0.0
        var stats = SpeculativeStats()
        /// Prompts whose tokens equal plain decoding's.
        var identical = 0
        var prompts = 0
    }

    struct Result {
        /// Plain decoding, then each speculative configuration, per prompt set ("code", "edit").
        var plain: [String: Run] = [:]
        var draft: [String: Run] = [:]
        var lookup: [String: Run] = [:]
        var both: [String: Run] = [:]
    }

    static func measure(
        target targetPath: String, draft draftPath: String?, lookup: Bool, draftVocabulary: DraftVocabularyChoice,
        residency: FileResidency, pool: ThreadPool
    ) throws -> Result {
        let targetFile = try WeightFile.open(targetPath, verify: false, residency: residency)
        let draftFile = try draftPath.map { try WeightFile.open($0, verify: false, residency: residency) }
        let target = try Model(file: targetFile, pool: pool)
        let draft = try draftFile.map { try Model(file: $0, pool: pool) }
        let tokenizer = try Tokenizer(json: targetFile.description.tokenizer)
        if let draft, draftVocabulary == .standard {
            draft.draftVocabulary = DraftVocabulary.standard(
                vocabularySize: draft.configuration.vocabSize, tokenCount: tokenizer.vocabularySize,
                specialIds: tokenizer.specialTokenIds)
        }
        let targetCache = try target.makeCache(memoryBudget: 64 << 20, contextLength: 1024)
        let draftCache = try draft.map { try $0.makeCache(memoryBudget: 64 << 20, contextLength: 1024) }
        let plain = Generator(model: target, cache: targetCache)
        // One generator per configuration: each learns its own acceptance rates and timings.
        var configurations: [(name: String, generator: SpeculativeGenerator)] = []
        if let draft, let draftCache {
            configurations.append(
                ("draft", try SpeculativeGenerator(target: target, targetCache: targetCache, draft: draft, draftCache: draftCache)))
        }
        if lookup {
            configurations.append(("lookup", try SpeculativeGenerator(target: target, targetCache: targetCache, lookup: PromptLookup())))
            if let draft, let draftCache {
                configurations.append(
                    ("both", try SpeculativeGenerator(
                        target: target, targetCache: targetCache, draft: draft, draftCache: draftCache, lookup: PromptLookup())))
            }
        }
        let parameters = GenerationParameters(maxTokens: tokens, sampling: .greedy)

        var result = Result()
        for (set, prompts) in [("code", codePrompts), ("edit", lookup ? editPrompts : [])] where !prompts.isEmpty {
            var plainRun = Run(), plainTokens = 0, plainSeconds = 0.0
            var runs = [String: (run: Run, tokens: Int, seconds: Double)]()
            for text in prompts {
                let prompt = tokenizer.encodeTrusted(template: text)
                let a = try plain.generate(prompt: prompt, parameters: parameters)
                plainTokens += a.stats.generatedTokens - 1
                plainSeconds += a.stats.generationSeconds
                plainRun.prompts += 1
                plainRun.identical += 1
                for (name, generator) in configurations {
                    let b = try generator.generate(prompt: prompt, parameters: parameters)
                    var entry = runs[name] ?? (Run(), 0, 0)
                    entry.tokens += b.generation.stats.generatedTokens - 1
                    entry.seconds += b.generation.stats.generationSeconds
                    entry.run.stats = entry.run.stats + b.speculation
                    entry.run.prompts += 1
                    if a.tokens == b.generation.tokens { entry.run.identical += 1 }
                    runs[name] = entry
                }
            }
            plainRun.tokensPerSecond = Double(plainTokens) / plainSeconds
            result.plain[set] = plainRun
            for (name, entry) in runs {
                var run = entry.run
                run.tokensPerSecond = Double(entry.tokens) / entry.seconds
                switch name {
                case "draft": result.draft[set] = run
                case "lookup": result.lookup[set] = run
                default: result.both[set] = run
                }
            }
        }
        withExtendedLifetime((targetFile, draftFile)) {}
        return result
    }
}
