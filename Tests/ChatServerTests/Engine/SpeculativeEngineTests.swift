// Speculative decoding inside the engine loop (a draft model or prompt lookup proposes, the served
// model verifies) must change nothing a client sees at temperature 0: the same tokens, text events, stops, usage and
// logprobs as the engine without a draft, with several streams joining and leaving, with the prefix
// cache, and through preemption. The reference is the plain Generator on the served model alone.
import Foundation
import Tensor
import TestSupport
import Tokenizer
import Transformer
import XCTest
@testable import ChatServer

final class SpeculativeEngineTests: XCTestCase {
    /// Runs `jobs` (joining at the given steps) to completion and returns each one's events.
    private func serve(
        _ h: SchedulerHarness, _ jobs: [(job: SchedulerJob, joinAt: Int)], steps: Int = 400
    ) async throws -> (events: [String: [GenerationEvent]], reports: [StepReport]) {
        var streams: [String: AsyncThrowingStream<GenerationEvent, Error>] = [:]
        var reports: [StepReport] = []
        for step in 0..<steps {
            for j in jobs where j.joinAt == step { streams[j.job.requestId] = try h.scheduler.trySubmit(j.job) }
            reports.append(h.scheduler.step())
            h.clock.advance(0.01)
            if step > jobs.map(\.joinAt).max()! && h.scheduler.activeRequestCount == 0 { break }
        }
        XCTAssertEqual(h.scheduler.activeRequestCount, 0, "every request should have finished")
        var events: [String: [GenerationEvent]] = [:]
        for (id, stream) in streams {
            let (e, error) = await collect(stream)
            XCTAssertNil(error, "request \(id)")
            events[id] = e
        }
        return (events, reports)
    }

    private func jobs(_ h: SchedulerHarness) -> [(job: SchedulerJob, joinAt: Int)] {
        var list: [(job: SchedulerJob, joinAt: Int)] = []
        let specs: [(String, Int, Int, Int)] = [("a", 5, 30, 0), ("b", 40, 25, 0), ("c", 12, 9, 2), ("d", 70, 40, 5), ("e", 1, 17, 9)]
        for (id, promptLength, maxTokens, joinAt) in specs {
            var job = h.job(id, prompt: EngineFixture.prompt(promptLength, seed: UInt64(promptLength)), maxTokens: maxTokens)
            if id == "b" { job.logprobs = 3 }
            if id == "d" { job.stopTokenIds = [EngineFixture.imEnd, 7] }
            list.append((job, joinAt))
        }
        // A repeat of "a"'s prompt later on: its prefix is cached in both the model's and the draft's pool.
        list.append((h.job("a2", prompt: EngineFixture.prompt(5, seed: 5) + EngineFixture.prompt(9, seed: 50), maxTokens: 12), 30))
        return list
    }

    /// Events equal, logprobs within `tolerance` (rows of a multi-row step add in another order).
    private func assertSameEvents(_ a: [GenerationEvent], _ b: [GenerationEvent], _ id: String, tolerance: Float = 1e-3) {
        XCTAssertEqual(a.count, b.count, "request \(id): event counts")
        for (x, y) in zip(a, b) {
            if case .logprobs(let p) = x, case .logprobs(let q) = y {
                XCTAssertEqual(p.token, q.token, "request \(id)")
                XCTAssertEqual(p.logprob, q.logprob, accuracy: tolerance, "request \(id)")
                XCTAssertEqual(p.top.map(\.token), q.top.map(\.token), "request \(id)")
            } else {
                XCTAssertEqual(x, y, "request \(id)")
            }
        }
    }

    /// Serves `jobs` on `h` and checks each reply: the plain engine's events (`reference`) and the
    /// tokens of the model alone. Returns the step reports.
    private func serveAsPlain(
        _ h: SchedulerHarness, reference: [String: [GenerationEvent]], _ name: String
    ) async throws -> [StepReport] {
        let (events, reports) = try await serve(h, jobs(h))
        for (id, expected) in reference { assertSameEvents(events[id] ?? [], expected, "\(name) \(id)") }
        for j in jobs(h) {
            let alone = try EngineFixture.alone(h.model, prompt: j.job.prompt, maxTokens: j.job.maxTokens, stop: j.job.stopTokenIds)
            XCTAssertEqual(h.log[j.job.requestId], alone, "\(name) \(j.job.requestId): tokens of the model alone")
        }
        return reports
    }

    func testGreedyRepliesAreTheSameWithADraft() async throws {
        let settings = SchedulerSettings(maxRunningSequences: 8, prefillTokensPerStep: 16)
        let plain = try SchedulerHarness(settings: settings)
        let reference = try await serve(plain, jobs(plain))
        // The same weights as a draft (every draft kept) and other weights (most rejected).
        for (name, draftSeed) in [("same weights", UInt64(3)), ("other weights", UInt64(9))] {
            let h = try SchedulerHarness(settings: settings, draft: try EngineFixture.model(seed: draftSeed))
            let reports = try await serveAsPlain(h, reference: reference.events, name)
            let drafted = reports.reduce(0) { $0 + $1.draftedTokens }, accepted = reports.reduce(0) { $0 + $1.acceptedTokens }
            XCTAssertGreaterThan(drafted, 0, "\(name): the draft proposed tokens")
            if draftSeed == 3 {
                XCTAssertEqual(accepted, drafted, "the same weights: every draft token kept")
                XCTAssertLessThan(reports.count, reference.reports.count, "\(name): fewer steps with drafts")
            }
            XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount, "\(name): every block back in the model's pool")
            XCTAssertEqual(h.scheduler.draft!.cache.freeBlockCount, h.scheduler.draft!.cache.blockCount, "\(name): and in the draft's")
            XCTAssertGreaterThan(h.scheduler.draft!.cache.cachedBlockCount, 0, "\(name): the draft publishes its verified blocks")
        }
    }

    /// Prompt lookup drafts (alone, and beside a draft model): the same events as the plain engine.
    /// The tiny model's greedy replies repeat themselves, so lookups match often.
    func testGreedyRepliesAreTheSameWithPromptLookup() async throws {
        SarvamMetrics.bootstrap()  // before the engines make their metric handles
        var settings = SchedulerSettings(maxRunningSequences: 8, prefillTokensPerStep: 16)
        let plain = try SchedulerHarness(settings: settings)
        let reference = try await serve(plain, jobs(plain))
        settings.promptLookup = true
        for (name, draft) in [("lookup alone", nil), ("lookup and a draft", try EngineFixture.model(seed: 9))] as [(String, Model?)] {
            let h = try SchedulerHarness(settings: settings, draft: draft)
            let reports = try await serveAsPlain(h, reference: reference.events, name)
            let drafted = reports.reduce(0) { $0 + $1.draftedTokens }, accepted = reports.reduce(0) { $0 + $1.acceptedTokens }
            XCTAssertGreaterThan(accepted, 0, "\(name): drafts proposed and kept")
            XCTAssertGreaterThanOrEqual(drafted, accepted)
            // The metrics count lookup drafts under their own source label.
            let id = h.scheduler.modelId
            let lookupKept = metricValue("sarvam_speculative_accepted_tokens_total", model: id, label: "source=\"lookup\"")
            let modelKept = metricValue("sarvam_speculative_accepted_tokens_total", model: id, label: "source=\"draft\"")
            XCTAssertGreaterThan(lookupKept, 0, "\(name): lookup drafts kept, by the metrics")
            XCTAssertEqual(lookupKept + modelKept, Double(accepted), "\(name): the metrics count every kept draft once")
            if draft == nil { XCTAssertLessThan(reports.count, reference.reports.count, "\(name): fewer steps with drafts") }
            XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount, "\(name): every block back in the pool")
        }
    }

    /// At temperature > 0 with lookup drafts only: replies complete with their length and drafts
    /// run; a request with a seed does not speculate, so its tokens are those the plain engine gives
    /// for that seed.
    func testSampledRepliesWithPromptLookupComplete() async throws {
        var settings = SchedulerSettings(maxRunningSequences: 5, prefillTokensPerStep: 16)
        func jobs(_ h: SchedulerHarness) -> [(job: SchedulerJob, joinAt: Int)] {
            var list: [(job: SchedulerJob, joinAt: Int)] = []
            for i in 0..<5 {
                var job = h.job("s\(i)", prompt: EngineFixture.prompt(8 + i, seed: UInt64(60 + i)), maxTokens: 40)
                job.sampling = Transformer::SamplingParameters(temperature: 0.3, topK: 3, seed: i == 4 ? 11 : nil)
                list.append((job, i))
            }
            return list
        }
        let plain = try SchedulerHarness(settings: settings)
        _ = try await serve(plain, jobs(plain))
        settings.promptLookup = true
        let h = try SchedulerHarness(settings: settings)
        let (events, reports) = try await serve(h, jobs(h))
        for j in jobs(h) {
            XCTAssertEqual(h.log[j.job.requestId].count, 40, j.job.requestId)
            XCTAssertEqual(
                events[j.job.requestId]?.last, .finished(.length, GenerationUsage(promptTokens: j.job.prompt.count, completionTokens: 40)))
        }
        XCTAssertEqual(h.log["s4"], plain.log["s4"], "the seeded request: the plain engine's tokens for its seed")
        XCTAssertGreaterThan(reports.reduce(0) { $0 + $1.draftedTokens }, 0)
    }

    func testPreemptionWithDraftsGivesTheSameTokens() async throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 3, admissionHeadroomTokens: 2), blocks: 12,
            draft: try EngineFixture.model(seed: 3))
        let prompts = (0..<3).map { EngineFixture.prompt(10, seed: UInt64(30 + $0)) }
        let streams = try prompts.enumerated().map { i, p in try h.scheduler.trySubmit(h.job("r\(i)", prompt: p, maxTokens: 20)) }
        let reports = h.runToCompletion()
        for s in streams {
            let error = await collect(s).error
            XCTAssertNil(error)
        }
        XCTAssertGreaterThan(reports.reduce(0) { $0 + $1.preempted.count }, 0, "the pool is too small for all three")
        XCTAssertGreaterThan(reports.reduce(0) { $0 + $1.acceptedTokens }, 0)
        for (i, p) in prompts.enumerated() {
            XCTAssertEqual(h.log["r\(i)"], try EngineFixture.alone(h.model, prompt: p, maxTokens: 20), "request r\(i)")
        }
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
    }

    /// At temperature > 0 replies complete with their length and stay within the top-k of the model.
    func testSampledRepliesComplete() async throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 16), draft: try EngineFixture.model(seed: 9))
        var list: [(job: SchedulerJob, joinAt: Int)] = []
        for i in 0..<4 {
            var job = h.job("s\(i)", prompt: EngineFixture.prompt(8 + i, seed: UInt64(60 + i)), maxTokens: 24)
            job.sampling = Transformer::SamplingParameters(temperature: 0.8, topK: 5)  // no seed: seeded ones do not speculate
            list.append((job, i))
        }
        let (events, reports) = try await serve(h, list)
        for j in list {
            XCTAssertEqual(h.log[j.job.requestId].count, 24, j.job.requestId)
            XCTAssertEqual(
                events[j.job.requestId]?.last, .finished(.length, GenerationUsage(promptTokens: j.job.prompt.count, completionTokens: 24)))
        }
        XCTAssertGreaterThan(reports.reduce(0) { $0 + $1.draftedTokens }, 0)
    }
}

/// The served 1.5B model with the 0.5B one drafting, against the same engine without a draft: three
/// concurrent greedy streams each. The tokens must be equal; the one allowed difference is a near-tie
/// that a step of another shape adds in another order and flips: three streams' verification rows
/// (3 × (k + 1)) and prompt chunks beside decode rows pass `QuantKernels.rowInvariantRows`, where the
/// GEMM kernels take over (one sequence alone is exact: SpeculativeRealModelTests). Then the two
/// tokens' logits on the plain one-row path must be within `tieMargin`, and the rest is not compared.
/// That reference differs from both engines too (their float16 KV entries were written by batched
/// steps): flips measured 0.04-0.16 apart, while a wrong verification keeps tokens whose logits lie
/// far below the top.
final class SpeculativeRealModelEngineTests: XCTestCase {
    static let tieMargin: Float = 0.3

    func testServedRepliesEqualWithoutDraftAndConcurrentStreamsComplete() async throws {
        let largePath = repositoryRoot().appendingPathComponent("weights/qwen2.5-coder-1.5b-instruct.sarvam").path
        guard FileManager.default.fileExists(atPath: largePath) else {
            throw XCTSkip("\(largePath) is missing (`tools/fetch-model large`): no 1.5B model to serve with a draft")
        }
        SarvamMetrics.bootstrap()  // before the engines make their metric handles
        let targetFile = try WeightFile.open(largePath, verify: false)
        let draftFile = try WeightFile.open(defaultModelPath().path, verify: false)
        let pool = ThreadPool(threads: 2)
        let target = try Model(file: targetFile, pool: pool)
        let tokenizer = try Tokenizer(json: targetFile.description.tokenizer)
        let template = ChatTemplate(detectingFrom: targetFile.description.chatTemplate)
        var settings = TransformerEngineSettings(contextLength: 1024, threads: 2, kvCacheBytes: 96 << 20)
        settings.scheduler.interTokenLatencyTarget = nil
        let questions = [
            "Write a Python function that merges two sorted lists.",
            "Write a Swift struct for a 2D point with a distance method.",
            "What does HTTP status 404 mean?",
        ]
        let prompts = questions.map {
            tokenizer.encodeTrusted(template: "<|im_start|>user\n\($0)<|im_end|>\n<|im_start|>assistant\n")
        }
        let maxTokens = 64
        func replies(draft: Model?) async throws -> (tokens: [[Int]], drafted: Double) {
            let engine = try makeTransformerEngine(
                id: "heavy-\(draft == nil ? "plain" : "draft")", model: target, tokenizer: tokenizer, template: template,
                settings: settings, draft: draft)
            defer { engine.scheduler.shutdownAndWait() }
            let log = TokenLog()
            let streams = try prompts.enumerated().map { i, p in
                try engine.scheduler.trySubmit(
                    SchedulerJob(
                        prompt: p, maxTokens: maxTokens, sampling: .greedy, userId: Int64(i), requestId: "q\(i)",
                        onToken: { log.append("q\(i)", $0) }))
            }
            for (i, s) in streams.enumerated() {
                let (events, error) = await collect(s)
                XCTAssertNil(error, "question \(i)")
                guard case .finished(_, let usage) = events.last else { XCTFail("question \(i) did not finish"); continue }
                XCTAssertEqual(usage.completionTokens, log["q\(i)"].count, "question \(i)")
            }
            let drafted = metricValue("sarvam_speculative_draft_tokens_total", model: engine.modelInfo.id, label: "source=\"draft\"")
            return (prompts.indices.map { log["q\($0)"] }, drafted)
        }
        let plain = try await replies(draft: nil)
        // The draft as `sarvam serve` makes it: the logits of its leading and special ids only.
        let draft = try makeDraftModel(file: draftFile, pool: pool, tokenizer: tokenizer)
        XCTAssertEqual(draft.draftVocabulary?.head, DraftVocabulary.defaultHead)
        // Qwen2.5's special ids start at <|endoftext|>, 151,643; the tokenizer lists 151,936 ids.
        XCTAssertEqual(draft.draftVocabulary?.tail, 151_643..<tokenizer.vocabularySize)
        let speculative = try await replies(draft: draft)
        XCTAssertGreaterThan(speculative.drafted, 0, "the draft proposed tokens")
        let cache = try target.makeCache(memoryBudget: 64 << 20, contextLength: 1024)
        for i in questions.indices {
            let a = plain.tokens[i], b = speculative.tokens[i]
            XCTAssertFalse(a.isEmpty, "question \(i)")
            guard let d = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset else {
                XCTAssertEqual(a, b, "question \(i)")
                continue
            }
            // The plain one-row path's logits after the common part.
            let seq = cache.makeSequence()
            defer { cache.release(seq) }
            var logits = try target.forward([SequenceInput(sequence: seq, tokens: prompts[i], logits: .last)])
            for t in a[..<d] { logits = try target.forward([SequenceInput(sequence: seq, tokens: [t], logits: .last)]) }
            let row = logits.last(entry: 0)!
            let margin = abs(row[a[d]] - row[b[d]])
            print("question \(i), token \(d): \(b[d]) with the draft, \(a[d]) without; logit margin \(margin)")
            XCTAssertLessThan(margin, Self.tieMargin, "question \(i), token \(d): not a near-tie")
        }
        withExtendedLifetime((targetFile, draftFile)) {}
    }
}

/// Which served model drafts for which: by the size of the files themselves (through symbolic links).
final class SpeculativePairTests: XCTestCase {
    func testTheSmallestFileDraftsForTheLargestThroughLinks() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pair-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, bytes) in [("small.bin", 10), ("large.bin", 30)] {
            try Data(count: bytes).write(to: dir.appendingPathComponent(name))
        }
        // Links of equal length to files of different sizes.
        for (link, file) in [("a", "small.bin"), ("b", "large.bin")] {
            try FileManager.default.createSymbolicLink(
                atPath: dir.appendingPathComponent(link).path, withDestinationPath: dir.appendingPathComponent(file).path)
        }
        let a = dir.appendingPathComponent("a").path, b = dir.appendingPathComponent("b").path
        let pair = speculativePair([a, b])
        XCTAssertEqual(pair?.target, b)
        XCTAssertEqual(pair?.draft, a)
        XCTAssertNil(speculativePair([a]))
        XCTAssertNil(speculativePair([a, a]))
    }
}
