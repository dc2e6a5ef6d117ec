// `sarvam generate`, `sarvam chat`, `sarvam perplexity`: the engine from the terminal. Wiring only:
// the token-level work is Transformer's (Generator, Perplexity), text is Tokenizer's.
import ArgumentParser
import struct ChatServer.StopSequenceMatcher
import Dispatch
import Foundation
import Tensor
import Tokenizer
import Transformer

/// A weight file opened once: model, tokenizer and chat template from the same file.
private struct LoadedModel {
    let path: String
    let model: Model
    let tokenizer: Tokenizer
    let template: ChatTemplate
    let loadSeconds: Double

    init(path: String?, threads: Int?) throws {
        let path = try DefaultModel.resolve(path)
        let threads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, found \(threads)") }
        let start = Date()
        let file = try WeightFile.open(path, verify: false, residency: .hugePages)
        self.path = path
        model = try Model(file: file, pool: ThreadPool(threads: threads))
        tokenizer = try Tokenizer(json: file.description.tokenizer)
        template = ChatTemplate(detectingFrom: file.description.chatTemplate)
        loadSeconds = Date().timeIntervalSince(start)
    }

    func makeCache(context: Int?, precision: KVCache.Precision) throws -> KVCache {
        let c = model.configuration
        let length = min(c.maxPositionEmbeddings, context ?? 4096)
        guard length >= 16 else { throw ValidationError("--context must be at least 16 tokens, found \(length)") }
        let blocks = (length + 15) / 16
        return try KVCache(configuration: c, blockCount: blocks, precision: precision, blockSize: 16, contextLength: length)
    }
}

/// Sampling options shared by generate and chat.
struct SamplingOptions: ParsableArguments {
    @Option(name: .long, help: "Maximum number of tokens to generate.")
    var maxTokens: Int = 256
    @Option(name: .long, help: "Sampling temperature; 0 = greedy.")
    var temperature: Float = 0.8
    @Option(name: .long, help: "Keep the k most likely tokens (0 = off).")
    var topK: Int = 40
    @Option(name: .long, help: "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).")
    var topP: Float = 0.95
    @Option(name: .long, help: "Drop tokens less likely than min-p × the best one (0 = off).")
    var minP: Float = 0.05
    @Option(name: .long, help: "Penalty on recently seen tokens (1 = off).")
    var repetitionPenalty: Float = 1
    @Option(name: .long, help: "Subtracted once from the logit of each recent token (0 = off).")
    var presencePenalty: Float = 0
    @Option(name: .long, help: "Subtracted per occurrence of a recent token (0 = off).")
    var frequencyPenalty: Float = 0
    @Option(name: .long, help: "Random seed (default: a new one each run).")
    var seed: UInt64?
    @Option(name: .long, help: "Context length in tokens (default: min(4096, the model's)).")
    var context: Int?
    @Option(name: .long, help: "Worker threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("kv"), help: "KV cache precision: float16 or float32.")
    var kvPrecision: String = "float16"

    func parameters() throws -> SamplingParameters {
        let p = SamplingParameters(
            temperature: temperature, topK: topK, topP: topP, minP: minP,
            repetitionPenalty: repetitionPenalty, presencePenalty: presencePenalty,
            frequencyPenalty: frequencyPenalty, seed: seed)
        do { try p.validate() } catch { throw ValidationError("\(error)") }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must be >= 0, found \(maxTokens)") }
        return p
    }

    func precision() throws -> KVCache.Precision {
        guard let p = KVCache.Precision(rawValue: kvPrecision) else {
            throw ValidationError("--kv must be float16 or float32, found \(kvPrecision)")
        }
        return p
    }
}

/// Ctrl-C sets a flag instead of killing the process (installed for the command's lifetime).
private final class InterruptHandler: @unchecked Sendable {
    let flag = CancelFlag()
    private let source: DispatchSourceSignal

    init(onIdle: (@Sendable () -> Void)? = nil, isBusy: @escaping @Sendable () -> Bool = { true }) {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        let flag = self.flag
        source.setEventHandler {
            if isBusy() { flag.set() } else { onIdle?() }
        }
        source.resume()
    }

    deinit {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}

private func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// The stop reason as `--json` reports it (in `generate`, a requested stop is a stop string).
private func stopReasonName(_ reason: StopReason) -> String {
    switch reason {
    case .stopToken: "stop_token"
    case .maxTokens: "max_tokens"
    case .contextLimit: "context_limit"
    case .cancelled: "cancelled"
    case .requested: "stop_string"
    }
}

private func timingLine(_ s: GenerationStats) -> String {
    String(
        format: "prompt: %d tokens, %.1f tokens/s | generated: %d tokens, %.1f tokens/s",
        s.promptTokens, s.promptTokensPerSecond, s.generatedTokens, s.generatedTokensPerSecond)
}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt, streaming the text, then print the timings.")

    @Option(help: "Sarvam weight file (default: the default model in weights/).")
    var model: String?
    @Argument(help: "The prompt.")
    var prompt: String
    @OptionGroup var sampling: SamplingOptions
    @Flag(help: "Wrap the prompt as one user message in the model's chat template.")
    var chat = false
    @Flag(help: "Recognize special tokens (such as <|im_start|>) written in the prompt.")
    var special = false
    @Option(name: .long, help: "Stop when the text contains this string (repeatable).")
    var stop: [String] = []
    @Flag(help: "Print one JSON object: token ids, text, timings.")
    var json = false

    func run() throws {
        let parameters = try sampling.parameters()
        let loaded = try LoadedModel(path: model, threads: sampling.threads)
        let tokenizer = loaded.tokenizer
        let promptIds: [Int]
        if chat {
            promptIds = tokenizer.encode(
                prompt: loaded.template.renderPrompt([ChatMessage(role: .user, content: prompt)]), addBos: tokenizer.addsBosToken)
        } else if special {
            promptIds = tokenizer.encodeTrusted(template: prompt, addBos: tokenizer.addsBosToken)
        } else {
            promptIds = tokenizer.encode(text: prompt, addBos: tokenizer.addsBosToken)
        }
        guard !promptIds.isEmpty else { throw ValidationError("the prompt is empty") }
        let cache = try loaded.makeCache(context: sampling.context, precision: try sampling.precision())
        guard promptIds.count < cache.contextLength else {
            throw ValidationError("the prompt has \(promptIds.count) tokens; the context holds \(cache.contextLength) (raise --context)")
        }
        let generator = Generator(model: loaded.model, cache: cache)
        let interrupt = InterruptHandler()
        var decoder = tokenizer.makeStreamingDecoder(skipSpecial: false)
        // Stop strings are text: the reply is cut before the earliest one and generation stops there.
        var matcher = StopSequenceMatcher(stop)
        var text = ""
        let result = try generator.generate(
            prompt: promptIds,
            parameters: GenerationParameters(
                maxTokens: sampling.maxTokens, sampling: parameters,
                stopTokenIds: Set(tokenizer.stopTokenIds(for: loaded.template))),
            isCancelled: { interrupt.flag.isSet },
            onToken: { token in
                let (piece, hit) = matcher.feed(decoder.append(token))
                text += piece
                if !json { writeOut(piece) }
                return hit ? .stop : .proceed
            })
        if result.stopReason != .requested {
            let rest = matcher.feed(decoder.finish()).emit + matcher.flush()
            text += rest
            if !json { writeOut(rest) }
        }
        if json {
            let s = result.stats
            let object: [String: Any] = [
                "model": loaded.path,
                "prompt_tokens": s.promptTokens,
                "tokens": result.tokens,
                "text": text,
                "stop_reason": stopReasonName(result.stopReason),
                "timings": [
                    "load_s": loaded.loadSeconds,
                    "prompt_s": s.promptSeconds,
                    "prompt_tokens_per_s": s.promptTokensPerSecond,
                    "generated_tokens": s.generatedTokens,
                    "generation_s": s.generationSeconds,
                    "generated_tokens_per_s": s.generatedTokensPerSecond,
                ] as [String: Any],
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            writeOut("\n")
            printError(timingLine(result.stats) + (result.stopReason == .cancelled ? " (interrupted)" : ""))
        }
        withExtendedLifetime(interrupt) {}
    }
}

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model in the terminal (Ctrl-C stops an answer; /exit or Ctrl-D quits).")

    @Option(help: "Sarvam weight file (default: the default model in weights/).")
    var model: String?
    @Option(help: "System prompt (default: the template's own, if any).")
    var system: String?
    @OptionGroup var sampling: SamplingOptions
    @Flag(help: "Print the timings after each answer.")
    var verbose = false

    func run() throws {
        let parameters = try sampling.parameters()
        let loaded = try LoadedModel(path: model, threads: sampling.threads)
        let tokenizer = loaded.tokenizer
        let cache = try loaded.makeCache(context: sampling.context, precision: try sampling.precision())
        let generator = Generator(model: loaded.model, cache: cache)
        // One sequence for the whole session: each turn reuses the cached history.
        let sequence = cache.makeSequence()
        let stopIds = Set(tokenizer.stopTokenIds(for: loaded.template))
        let busy = CancelFlag()
        let interrupt = InterruptHandler(
            onIdle: { printError("\n(type /exit or press Ctrl-D to quit)") },
            isBusy: { busy.isSet })
        var history: [ChatMessage] = system.map { [ChatMessage(role: .system, content: $0)] } ?? []
        printError(
            "\(loaded.path) loaded in \(String(format: "%.1f", loaded.loadSeconds)) s; context \(cache.contextLength) tokens. /reset clears the history, /exit quits."
        )
        while true {
            writeOut("> ")
            guard let line = readLine() else { writeOut("\n"); break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                history = system.map { [ChatMessage(role: .system, content: $0)] } ?? []
                cache.release(sequence)
                continue
            }
            history.append(ChatMessage(role: .user, content: input))
            // Drop the oldest turns (never the system prompt) until the prompt and the answer fit.
            var promptIds = tokenizer.encode(prompt: loaded.template.renderPrompt(history), addBos: tokenizer.addsBosToken)
            let budget = cache.contextLength - min(sampling.maxTokens, cache.contextLength / 2)
            while promptIds.count > budget {
                let first = history.first?.role == .system ? 1 : 0
                guard history.count - first > 1 else { break }
                history.remove(at: first)
                promptIds = tokenizer.encode(prompt: loaded.template.renderPrompt(history), addBos: tokenizer.addsBosToken)
            }
            guard promptIds.count < cache.contextLength else {
                printError("that message is too long for the context (\(promptIds.count) tokens of \(cache.contextLength))")
                history.removeLast()
                continue
            }
            var decoder = tokenizer.makeStreamingDecoder(skipSpecial: true)
            var answer = ""
            interrupt.flag.reset()
            busy.set()
            let result: GenerationResult
            do {
                result = try generator.generate(
                    prompt: promptIds,
                    parameters: GenerationParameters(maxTokens: sampling.maxTokens, sampling: parameters, stopTokenIds: stopIds),
                    sequence: sequence,
                    isCancelled: { interrupt.flag.isSet },
                    onToken: { token in
                        let piece = decoder.append(token)
                        answer += piece
                        writeOut(piece)
                        return .proceed
                    })
            } catch {
                busy.reset()
                printError("\nerror: \(error)")
                history.removeLast()
                cache.release(sequence)
                continue
            }
            busy.reset()
            let rest = decoder.finish()
            answer += rest
            writeOut(rest + "\n")
            if result.stopReason == .cancelled { printError("(stopped)") }
            if verbose { printError(timingLine(result.stats)) }
            history.append(ChatMessage(role: .assistant, content: answer))
        }
        withExtendedLifetime(interrupt) {}
    }
}

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a text file, computed as llama.cpp's perplexity tool does.")

    @Option(help: "Sarvam weight file (default: the default model in weights/).")
    var model: String?
    @Option(help: "The text file.")
    var file: String
    @Option(help: "Tokens per chunk; each chunk is scored on its second half.")
    var ctx: Int = 512
    @Option(help: "Tokens per forward step.")
    var batch: Int = 128
    @Option(help: "Worker threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("kv"), help: "KV cache precision: float16 or float32.")
    var kvPrecision: String = "float16"
    @Flag(help: "Print the per-chunk values and the estimate as JSON.")
    var json = false

    func run() throws {
        guard let precision = KVCache.Precision(rawValue: kvPrecision) else {
            throw ValidationError("--kv must be float16 or float32, found \(kvPrecision)")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read the text file \(file)")
        }
        var text = String(decoding: data, as: UTF8.self)
        // llama.cpp's -f drops one trailing newline.
        if text.hasSuffix("\n") { text.removeLast() }
        let loaded = try LoadedModel(path: model, threads: threads)
        let start = Date()
        let tokens = loaded.tokenizer.encode(text: text, addBos: loaded.tokenizer.addsBosToken)
        let bos = loaded.tokenizer.addsBosToken ? loaded.tokenizer.bosTokenId : nil
        if !json { printError("\(tokens.count) tokens, \(tokens.count / ctx) chunks of \(ctx)") }
        let result = try Perplexity.evaluate(
            model: loaded.model, tokens: tokens, context: ctx, bosTokenId: bos, batch: batch,
            cachePrecision: precision
        ) { chunk, _, running in
            if !json { printError(String(format: "[%d]%.4f", chunk, running)) }
        }
        let seconds = Date().timeIntervalSince(start)
        if json {
            let object: [String: Any] = [
                "model": loaded.path, "file": file, "ctx": ctx, "tokens": tokens.count, "chunks": result.chunks,
                "scored_tokens": result.scoredTokens, "per_chunk": result.chunkPerplexity,
                "running": result.runningPerplexity, "perplexity": result.perplexity,
                "stderr": result.standardError, "seconds": seconds,
            ]
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
        } else {
            print(
                String(
                    format: "Final estimate: PPL = %.4f +/- %.5f (%d chunks of %d tokens, %.1f s)",
                    result.perplexity, result.standardError, result.chunks, ctx, seconds))
        }
    }
}
