import ArgumentParser
import ChatServer
import Foundation
import Logging

/// What `makeEngines` needs besides the model paths.
struct EngineOptions: Sendable {
    /// Context length per sequence; nil = the model's own (maxPositionEmbeddings), capped by the engine.
    var contextLength: Int?
    /// Compute threads.
    var threads: Int
    /// Sequences the engine runs at once (the scheduler's batch size, issue 7).
    var maxSequences: Int
    /// Requests that may wait for admission; the engine refuses more with `ChatEngineError.busy` (429).
    var queueLimit: Int
    var logger: Logger
}

// Implemented by the lead beside this file (adapter over Transformer + Tokenizer):
//   func makeEngines(modelPaths: [String], options: EngineOptions) async throws -> [any ChatEngine]
// One engine per path, loaded in order; it throws an error naming the file on failure.

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the chat page and the OpenAI-compatible API.",
        discussion: """
        Every option can also be set through the environment variable named beside it; the option wins.
        On the first start with an empty database an admin account is created and its key printed once
        (SARVAM_ADMIN_KEY, when set, becomes that key instead). SIGINT/SIGTERM stop the server gracefully.
        """)

    static let defaultModelPath = DefaultModel.relativePath

    @Option(name: .long, help: "Address to listen on (env SARVAM_HOST; default 127.0.0.1).")
    var host: String?
    @Option(name: .long, help: "Port (env SARVAM_PORT; default 8080; 0 picks a free one).")
    var port: Int?
    @Option(name: .long, help: "Sarvam weight file to serve; repeat for several (env SARVAM_MODEL, comma-separated; default \(defaultModelPath)).")
    var model: [String] = []
    @OptionGroup var data: DataOptions
    @Option(name: .long, help: "Context length per sequence (env SARVAM_CONTEXT; default: the model's).")
    var context: Int?
    @Option(name: .long, help: "Compute threads (env SARVAM_THREADS; default: all cores).")
    var threads: Int?
    @Option(name: .long, help: "Replies generated at once (env SARVAM_MAX_SEQUENCES; default 8).")
    var maxSequences: Int?
    @Option(name: .long, help: "Requests that may wait for a free sequence; more get 429 (env SARVAM_QUEUE_LIMIT; default 16).")
    var queueLimit: Int?
    @Option(name: .long, help: "Largest request body in bytes; larger get 413 (env SARVAM_MAX_BODY_BYTES; default 4194304).")
    var maxBodyBytes: Int?
    @Option(name: .long, help: "Seconds running replies may finish after SIGINT/SIGTERM (env SARVAM_DRAIN_SECONDS; default 15).")
    var drainSeconds: Int?
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (env SARVAM_LOG_LEVEL; default info).")
    var logLevel: String?

    /// Prints a line at once (`print` is block-buffered when stdout is a pipe or a file, as under tools/run).
    private static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    private static func env(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }

    private static func envInt(_ name: String) throws -> Int? {
        guard let text = env(name) else { return nil }
        guard let value = Int(text) else { throw ValidationError("\(name) must be an integer; found \(text.debugDescription)") }
        return value
    }

    func run() async throws {
        let host = self.host ?? Self.env("SARVAM_HOST") ?? "127.0.0.1"
        let port = try self.port ?? Self.envInt("SARVAM_PORT") ?? 8080
        var modelPaths = self.model
        if modelPaths.isEmpty, let list = Self.env("SARVAM_MODEL") {
            modelPaths = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if modelPaths.isEmpty { modelPaths = [Self.defaultModelPath] }
        let contextLength = try self.context ?? Self.envInt("SARVAM_CONTEXT")
        let threads = try self.threads ?? Self.envInt("SARVAM_THREADS") ?? ProcessInfo.processInfo.activeProcessorCount
        let maxSequences = try self.maxSequences ?? Self.envInt("SARVAM_MAX_SEQUENCES") ?? 8
        let queueLimit = try self.queueLimit ?? Self.envInt("SARVAM_QUEUE_LIMIT") ?? 16
        let maxBodyBytes = try self.maxBodyBytes ?? Self.envInt("SARVAM_MAX_BODY_BYTES") ?? (4 << 20)
        let drainSeconds = try self.drainSeconds ?? Self.envInt("SARVAM_DRAIN_SECONDS") ?? 15
        let levelName = self.logLevel ?? Self.env("SARVAM_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ValidationError("log level must be one of trace, debug, info, notice, warning, error, critical; found \(levelName.debugDescription)")
        }
        guard (0...65535).contains(port) else { throw ValidationError("port must be in 0...65535; found \(port)") }
        guard threads >= 1, maxSequences >= 1, queueLimit >= 0, maxBodyBytes >= 1024, drainSeconds >= 0 else {
            throw ValidationError("threads and max-sequences must be at least 1, queue-limit and drain-seconds at least 0, max-body-bytes at least 1024")
        }
        if let contextLength, contextLength < 16 { throw ValidationError("context must be at least 16 tokens; found \(contextLength)") }

        var logger = Logger(label: "sarvam.server", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = level

        let database = try ChatDatabase(path: data.databasePath)
        let store = GRDBChatStore(database: database)
        if let issued = try await Accounts(store: store).bootstrapAdmin(presetKey: Self.env("SARVAM_ADMIN_KEY")) {
            if Self.env("SARVAM_ADMIN_KEY") != nil {
                Self.say("Created the admin account with the key from SARVAM_ADMIN_KEY (key id \(issued.record.id)).")
            } else {
                Self.say("Created the admin account. Its API key is shown only this once (key id \(issued.record.id)):\n\(issued.key)")
            }
        }

        let catalog = EngineCatalog()
        let service = ChatService(
            catalog: catalog, store: store,
            // The engine queues and refuses (429) on its own; the server's cap is only a backstop.
            configuration: ChatServerConfiguration(maxBodyBytes: maxBodyBytes, maxConcurrentGenerations: maxSequences + queueLimit,
                                                   drainTimeout: .seconds(drainSeconds)),
            logger: logger)
        // The server answers (503 "loading") while the models load.
        let options = EngineOptions(contextLength: contextLength, threads: threads, maxSequences: maxSequences,
                                    queueLimit: queueLimit, logger: logger)
        let loader = Task {
            do {
                let engines = try await makeEngines(modelPaths: modelPaths, options: options)
                catalog.setReady(engines)
                logger.info("models loaded", metadata: ["models": "\(engines.map(\.modelInfo.id).joined(separator: ","))"])
            } catch {
                catalog.setFailed("\(error)")
                logger.error("could not load the model", metadata: ["error": "\(error)"])
            }
        }
        do {
            try await runChatServer(service, host: host, port: port) { boundPort in
                Self.say("Sarvam is listening on http://\(host):\(boundPort)/")
            }
        } catch {
            loader.cancel()
            try? database.close()
            throw error
        }
        loader.cancel()
        try database.close()
        logger.info("database closed; bye")
    }
}
