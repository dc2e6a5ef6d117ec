import ArgumentParser
import Foundation
import Tokenizer
import Transformer

/// `bench tokenizer [--description PATH | --model PATH] [--megabytes N] [--repeats N]`: encode and decode
/// throughput of the default model's tokenizer on a mixed text (English prose, code, CJK; about
/// 1 MB, generated from a fixed seed), single thread. Results are checked (decode(encode(text)) ==
/// text) before timing; reports the median of the repeats.
enum TokenizerBench {
    struct Options: ParsableArguments {
        @Option(
            name: .customLong("description"),
            help: ArgumentHelp("A TokenizerDescription JSON file to measure instead of a weight file's tokenizer.", valueName: "path"))
        var descriptionPath: String?
        @Option(help: ArgumentHelp("The weight file whose tokenizer is measured.", valueName: "path"))
        var model = "weights/qwen2.5-coder-0.5b-instruct.sarvam"
        @Option(parsing: .unconditional, help: "Size of the generated text in MB.")
        var megabytes: Double = 1
        @Option(parsing: .unconditional, help: "Timed encode/decode runs (medians are reported).")
        var repeats = 5

        func validate() throws {
            guard megabytes > 0, megabytes <= 1000 else {
                throw ValidationError("--megabytes: expected a number of megabytes in (0, 1000], found \(megabytes)")
            }
            if repeats < 1 { throw ValidationError("--repeats: expected a positive integer, found \(repeats)") }
        }
    }

    /// Uses `--description PATH` (a TokenizerDescription JSON) when given, else the tokenizer stored
    /// in `--model PATH` (default: the default model's weight file).
    static func run(_ options: Options) throws {
        if let path = options.descriptionPath {
            try run(options) { try TokenizerDescription.decodeJSON(Data(contentsOf: URL(fileURLWithPath: path))) }
        } else {
            try run(options) { try TokenizerDescription.decodeJSON(WeightFile.open(options.model).description.tokenizer) }
        }
    }

    /// `loadDescription` gives the tokenizer description to measure.
    static func run(_ options: Options, loadDescription: () throws -> TokenizerDescription) throws {
        let megabytes = options.megabytes, repeats = options.repeats

        var start = Date()
        let description = try loadDescription()
        let loadSeconds = Date().timeIntervalSince(start)
        start = Date()
        let tokenizer = try Tokenizer(description: description)
        let buildSeconds = Date().timeIntervalSince(start)
        print(
            String(
                format: "tokenizer: load description %.0f ms, build %.0f ms (%d tokens)",
                loadSeconds * 1000, buildSeconds * 1000, tokenizer.vocabularySize))

        let text = mixedText(bytes: Int(megabytes * 1_000_000))
        let bytes = Double(text.utf8.count)
        let ids = tokenizer.encode(text: text)
        guard Array(tokenizer.decode(ids).utf8) == Array(text.utf8) else {
            throw TokenizerError("bench tokenizer: decode(encode(text)) differs from the text; not timing a wrong result")
        }

        // Cold: a fresh tokenizer has an empty word cache; warm: the cache holds the text's words.
        // Times are this thread's CPU time (the box is shared, wall time would measure the neighbours)
        // and wall time beside it.
        let cold = try Tokenizer(description: description)
        let coldTime = measure { _ = cold.encode(text: text) }
        var encodeTimes: [Timing] = [], decodeTimes: [Timing] = []
        for _ in 0..<repeats {
            var again: [Int] = []
            encodeTimes.append(measure { again = tokenizer.encode(text: text) })
            precondition(again == ids)
            var back = ""
            decodeTimes.append(measure { back = tokenizer.decode(again) })
            precondition(back.utf8.count == text.utf8.count)
        }
        var streamedBytes = 0
        let streamTime = measure {
            var streamer = tokenizer.makeStreamingDecoder()
            for id in ids { streamedBytes += streamer.append(id).utf8.count }
            streamedBytes += streamer.finish().utf8.count
        }
        precondition(streamedBytes == text.utf8.count)

        func median(_ v: [Timing]) -> Timing {
            Timing(cpu: v.map(\.cpu).sorted()[v.count / 2], wall: v.map(\.wall).sorted()[v.count / 2])
        }
        let mb = bytes / 1e6
        func line(_ name: String, _ t: Timing, _ note: String = "") {
            print(
                String(
                    format: "%@ %7.1f MB/s CPU time  (%7.1f MB/s wall)%@", name.padding(toLength: 22, withPad: " ", startingAt: 0),
                    mb / t.cpu, mb / t.wall, note))
        }
        print(
            String(
                format: "text: %.2f MB mixed prose/code/CJK, %d tokens (%.2f bytes/token), single thread", mb, ids.count,
                bytes / Double(ids.count)))
        line("encode (cold cache):", coldTime)
        line("encode (warm cache):", median(encodeTimes), "  median of \(repeats)")
        line("decode:", median(decodeTimes), "  median of \(repeats)")
        line("streaming decode:", streamTime)
    }

    struct Timing {
        var cpu: Double
        var wall: Double
    }

    static func measure(_ body: () -> Void) -> Timing {
        func threadCPU() -> Double {
            var t = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
            return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
        }
        let wall = DispatchTime.now().uptimeNanoseconds
        let cpu = threadCPU()
        body()
        return Timing(cpu: threadCPU() - cpu, wall: Double(DispatchTime.now().uptimeNanoseconds - wall) * 1e-9)
    }

    /// About `bytes` bytes of English prose, Swift/Python-like code and Chinese/Japanese text in
    /// alternating paragraphs, from a fixed seed. Words are drawn from small lists, and numbers and
    /// identifiers are random, so the word cache sees realistic repetition.
    static func mixedText(bytes: Int) -> String {
        var rng = Random(seed: 7)
        let english =
            ("the of and to in is that for it as was with be by on not he this are or his from at which "
            + "but have an they you were her she there been one all we their has would when if so no will what "
            + "model token text language machine learning computer program memory server request response network "
            + "people government system because between through however another important different example").split(separator: " ")
        let keywords = [
            "let", "var", "func", "return", "if", "else", "for", "in", "while", "struct", "import", "def",
            "class", "self", "print", "guard", "switch", "case", "try", "await",
        ]
        let cjk = Array(
            "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跑快"
                .unicodeScalars)
        let kana = Array("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコ".unicodeScalars)
        var s = ""
        s.reserveCapacity(bytes + 1000)
        var paragraph = 0
        while s.utf8.count < bytes {
            switch paragraph % 3 {
            case 0:
                for sentence in 0..<rng.int(3...8) {
                    var words: [String] = []
                    for w in 0..<rng.int(6...20) {
                        var word = String(english[rng.int(0...(english.count - 1))])
                        if w == 0 { word = word.prefix(1).uppercased() + word.dropFirst() }
                        if rng.int(0...30) == 0 { word = String(rng.int(1...2030)) }
                        words.append(word)
                    }
                    s += words.joined(separator: " ") + (sentence % 4 == 3 ? "? " : ". ")
                }
                s += "\n\n"
            case 1:
                let name = "value\(rng.int(0...999))"
                s += "func compute_\(rng.int(0...9999))(\(name): Int, scale: Double = \(rng.int(0...100)).5) -> [Int] {\n"
                for _ in 0..<rng.int(2...8) {
                    let keyword = keywords[rng.int(0...(keywords.count - 1))]
                    s +=
                        "    \(keyword) item_\(rng.int(0...500)) = \(name) * \(rng.int(0...65535)) + 0x\(String(rng.int(0...0xFFFF), radix: 16)) // \(english[rng.int(0...(english.count - 1))])\n"
                }
                s += "    return [\(name), \(rng.int(-50...50))]\n}\n\n"
            default:
                var line = String.UnicodeScalarView()
                for k in 0..<rng.int(40...160) {
                    let pool = rng.int(0...4) == 0 ? kana : cjk
                    line.append(pool[rng.int(0...(pool.count - 1))])
                    if k % 17 == 16 { line.append(contentsOf: "，".unicodeScalars) }
                }
                s += String(line) + "。\n\n"
            }
            paragraph += 1
        }
        return s
    }

    /// SplitMix64, so the bench text is the same on every run.
    struct Random {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func int(_ range: ClosedRange<Int>) -> Int {
            range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
        }
    }
}
