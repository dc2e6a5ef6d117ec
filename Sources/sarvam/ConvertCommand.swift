import ArgumentParser
import Foundation
import ModelImport
import Tensor
import Transformer

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Import a GGUF file or a Hugging Face folder into a Sarvam weight file.",
        discussion: """
            INPUT is a .gguf file (llama or qwen2 architecture) or a Hugging Face folder (config.json, \
            *.safetensors, tokenizer.json). Quantization policies:
              \(QuantizationPolicy.allCases.map(\.summary).joined(separator: "\n  "))
            """)

    @Argument(help: "A .gguf file or a Hugging Face model folder.")
    var input: String

    @Argument(help: "The Sarvam weight file to write (.sarvam).")
    var output: String

    @Option(help: "Format of the matrices: auto (keep the source precision), int8, int4, f16 or f32.")
    var quant: String = "auto"

    func validate() throws {
        guard QuantizationPolicy(rawValue: quant) != nil else {
            throw ValidationError(
                "--quant must be one of \(QuantizationPolicy.allCases.map(\.rawValue).joined(separator: ", ")), found '\(quant)'")
        }
    }

    func run() throws {
        let policy = QuantizationPolicy(rawValue: quant)!
        let start = Date()
        let model: ImportedModel
        let summary: ConversionSummary
        let onTerminal = isatty(STDERR_FILENO) != 0
        do {
            model = try Converter.load(input)
            let c = model.configuration
            printError("\(model.source)")
            printError(
                "\(c.architecture): \(c.numHiddenLayers) layers, hidden \(c.hiddenSize), \(c.numAttentionHeads)/\(c.numKeyValueHeads) heads, vocab \(c.vocabSize); policy \(policy.rawValue)"
            )
            var lastDraw = Date.distantPast
            summary = try Converter.convert(model, to: output, policy: policy) { p in
                let now = Date()
                guard onTerminal, now.timeIntervalSince(lastDraw) > 0.1 || p.tensorNumber == p.tensorCount else { return }
                lastDraw = now
                let line = String(
                    format: "\r  tensor %d/%d  %@ / %@  %.1fs  %@", p.tensorNumber, p.tensorCount,
                    formatBytes(p.bytesWritten), formatBytes(p.totalBytes), now.timeIntervalSince(start), p.tensorName)
                FileHandle.standardError.write(Data((line.padding(toLength: 100, withPad: " ", startingAt: 0)).utf8))
            }
            if onTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
        } catch {
            if onTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
            printError("error: \(error)")
            throw ExitCode.failure
        }
        let formats = summary.formats.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key.rawValue)" }.joined(
            separator: ", ")
        print(
            String(
                format: "wrote %@: %@ parameters, %@, %.2f bits/weight, %.1f s", output,
                formatCount(summary.parameters), formatBytes(summary.fileBytes), summary.bitsPerWeight, Date().timeIntervalSince(start)))
        print("tensors: \(formats)" + (summary.requantizedGroups > 0 ? "; \(summary.requantizedGroups) groups of 32 requantized" : ""))
        print("policy: \(policy.summary)")
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

func formatBytes(_ n: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(n), unit = 0
    while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
    return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
}

func formatCount(_ n: Int) -> String {
    if n >= 1_000_000_000 { return String(format: "%.2fB", Double(n) / 1e9) }
    if n >= 1_000_000 { return String(format: "%.1fM", Double(n) / 1e6) }
    return "\(n)"
}
