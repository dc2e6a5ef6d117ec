import ArgumentParser
import ChatServer
import Foundation
import Logging
import Transformer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the chat page and the OpenAI-compatible API.",
        discussion: """
            Every option can also be set through the environment variable named beside it; the option wins.
            On the first start with an empty database an admin account is created and its key and a password
            for the page printed once (SARVAM_ADMIN_KEY and SARVAM_ADMIN_PASSWORD, when set, are used instead).
            SIGINT/SIGTERM stop the server gracefully.
            """)

    static let defaultModelPath = DefaultModel.relativePath

    @Option(name: .long, help: "Address to listen on (env SARVAM_HOST; default 127.0.0.1).")
    var host: String?
    @Option(name: .long, help: "Port (env SARVAM_PORT; default 8080; 0 picks a free one).")
    var port: Int?
    @Option(
        name: .long,
        help:
            "Sarvam weight file to serve; repeat for several (env SARVAM_MODEL, comma-separated; default \(defaultModelPath), and \(DefaultModel.largeRelativePath) when present).")
    var model: [String] = []
    @OptionGroup var data: DataOptions
    @Option(name: .long, help: "Context length per sequence (env SARVAM_CONTEXT; default: the model's).")
    var context: Int?
    @Option(name: .long, help: "Compute threads (env SARVAM_THREADS; default: all cores).")
    var threads: Int?
    @Option(name: .long, help: "Target seconds to a short prompt's first token, p95 (env SARVAM_SLO_TTFT; default 2).")
    var sloTtft: Double?
    @Option(name: .long, help: "Target seconds between two tokens of a streaming reply, p95 (env SARVAM_SLO_ITL; default 0.2).")
    var sloItl: Double?
    @Option(
        name: .long,
        help: "Replies generated at once at most (env SARVAM_MAX_SEQUENCES; default: what the measured step cost allows at the SLO).")
    var maxSequences: Int?
    @Option(name: .long, help: "Requests that may wait for a free sequence; more get 429 (env SARVAM_QUEUE_LIMIT; default 64).")
    var queueLimit: Int?
    @Option(name: .long, help: "Largest request body in bytes; larger get 413 (env SARVAM_MAX_BODY_BYTES; default 4194304).")
    var maxBodyBytes: Int?
    @Option(name: .long, help: "Seconds running replies may finish after SIGINT/SIGTERM (env SARVAM_DRAIN_SECONDS; default 15).")
    var drainSeconds: Int?
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (env SARVAM_LOG_LEVEL; default info).")
    var logLevel: String?
    @Option(
        name: .long,
        help: "json (one object per line) or text (env SARVAM_LOG_FORMAT; default json, text when standard error is a terminal).")
    var logFormat: String?
    @Option(
        name: .long,
        help:
            "Running replies one user may have; the rest wait (env SARVAM_MAX_SEQUENCES_PER_USER; default: an equal share while others wait)."
    )
    var maxSequencesPerUser: Int?
    @Option(
        name: .long,
        help:
            "Requests one user may have running or waiting; more get 429 (env SARVAM_MAX_REQUESTS_PER_USER; default: half of the sequences plus the queue)."
    )
    var maxRequestsPerUser: Int?
    @Option(
        name: .long,
        help: "KV cache memory per model in MiB (env SARVAM_KV_CACHE_MB; default: max-sequences full contexts, at most 1/4 of RAM).")
    var kvCacheMb: Int?
    @Option(
        name: .long,
        help:
            "Prompt tokens per engine step when no reply streams, and the ceiling otherwise (env SARVAM_PREFILL_TOKENS_PER_STEP; default 512)."
    )
    var prefillTokensPerStep: Int?
    @Option(
        name: .long, help: "on or off: share cached KV blocks between requests with a common prefix (env SARVAM_PREFIX_CACHE; default on).")
    var prefixCache: String?
    @Option(name: .long, help: "Cached prefixes kept while requests run, in MiB (env SARVAM_PREFIX_CACHE_MB; default 256).")
    var prefixCacheMb: Int?
    @Option(name: .long, help: "Cached prefixes kept while the engine is idle, in MiB (env SARVAM_PREFIX_CACHE_IDLE_MB; default 64).")
    var prefixCacheIdleMb: Int?
    @Option(
        name: .long,
        help:
            "on or off: conversations' KV blocks kept in DATA_DIR/kv-snapshots for the next turn (env SARVAM_KV_SNAPSHOTS; default on)."
    )
    var kvSnapshots: String?
    @Option(name: .long, help: "Disk budget of the KV snapshots per model, in MiB (env SARVAM_KV_DISK_MB; default 4096).")
    var kvDiskMb: Int?
    @Option(
        name: .long,
        help: "user, global or off: serve stored replies to repeated deterministic requests (env SARVAM_RESPONSE_CACHE; default user).")
    var responseCache: String?
    @Option(name: .long, help: "Memory for stored replies per model, in MiB (env SARVAM_RESPONSE_CACHE_MB; default 64).")
    var responseCacheMb: Int?
    @Option(
        name: .long,
        help: "on or off: with two models, the smaller drafts tokens the larger verifies (env SARVAM_SPECULATIVE; default off).")
    var speculative: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "on or off: speculative decoding with drafts looked up in the conversation itself (what followed an earlier "
                + "occurrence of the reply's last tokens; fast code edits), with or without a draft model "
                + "(env SARVAM_PROMPT_LOOKUP; default on)."))
    var promptLookup: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "huge-pages or mapped: read the weights into memory in 2 MB pages (faster decode; each process its own copy) "
                + "or map the file (pages shared with other processes) (env SARVAM_WEIGHTS; default huge-pages)."))
    var weights: String?
    @Option(
        name: .long,
        help: "Write one JSON line per engine step to this file, a profile for `bench steps` (env SARVAM_STEP_TRACE; default off).")
    var stepTrace: String?

    @Option(
        name: .long,
        help: "Generation requests a user may make per minute; the admin may set other limits per user (env SARVAM_QUOTA_REQUESTS_PER_MINUTE; default none).")
    var quotaRequestsPerMinute: Int?
    @Option(
        name: .long,
        help: "Tokens a user's replies may generate per UTC day; the admin may set other limits per user (env SARVAM_QUOTA_TOKENS_PER_DAY; default none).")
    var quotaTokensPerDay: Int?

    @Option(name: .long, help: "PEM certificate chain: serve HTTPS, with HTTP/2 where offered (env SARVAM_TLS_CERT; needs --tls-key).")
    var tlsCert: String?
    @Option(name: .long, help: "PEM private key of --tls-cert (env SARVAM_TLS_KEY).")
    var tlsKey: String?
    @Option(
        name: .long,
        help: "HOST:PORT of a second listener serving only GET /metrics, without a key (env SARVAM_METRICS_ADDRESS; default none).")
    var metricsAddress: String?
    @Option(
        name: .long,
        help: "Seconds a connection has to send a complete request head (env SARVAM_HEADER_TIMEOUT; default 10).")
    var headerTimeout: Double?
    @Option(
        name: .long,
        help: "Seconds a connection may stay silent between requests or within a body (env SARVAM_IDLE_TIMEOUT; default 60).")
    var idleTimeout: Double?
    @Option(name: .long, help: "Open connections at most; more are closed at once (env SARVAM_MAX_CONNECTIONS; default 512).")
    var maxConnections: Int?
    @Option(name: .long, help: "Hours a sign-in on the page lasts (env SARVAM_SESSION_HOURS; default 168, a week).")
    var sessionHours: Int?

    @Option(
        name: .long,
        help:
            """
            NAME=URL of an OpenAI-compatible server whose models are offered as NAME/MODEL; repeat for several \
            (env SARVAM_UPSTREAM, comma-separated; its key from SARVAM_UPSTREAM_<NAME>_KEY).
            """
    )
    var upstream: [String] = []
    @Option(
        name: .long,
        help: "Seconds an upstream has to start answering a request; then 504 (env SARVAM_UPSTREAM_FIRST_BYTE_TIMEOUT; default 30).")
    var upstreamFirstByteTimeout: Double?
    @Option(
        name: .long,
        help: "Seconds an upstream's reply may stay silent between two pieces; then 504 (env SARVAM_UPSTREAM_IDLE_TIMEOUT; default 60).")
    var upstreamIdleTimeout: Double?
    @Option(name: .long, help: "Seconds between two reads of an upstream's model list (env SARVAM_UPSTREAM_REFRESH; default 60).")
    var upstreamRefresh: Double?
    @Option(
        name: .long,
        help: "on or off: `auto` sends requests light while the heavy tier would break the SLO (env SARVAM_TIER_DEGRADE; default on).")
    var tierDegrade: String?
    @Option(
        name: .long,
        help: "NAME/MODEL of an upstream that takes `auto` requests while every local tier is saturated (env SARVAM_UPSTREAM_OVERFLOW).")
    var upstreamOverflow: String?

    /// Prints a line at once (`print` is block-buffered when stdout is a pipe or a file, as under tools/run).
    private static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    func run() async throws {
        let settings = Settings.process
        let host = settings.string(self.host, "SARVAM_HOST") ?? "127.0.0.1"
        let port = try settings.int(self.port, "SARVAM_PORT", in: 0...65535) ?? 8080
        var modelPaths = self.model
        if modelPaths.isEmpty, let list = settings.raw("SARVAM_MODEL") {
            modelPaths = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if modelPaths.isEmpty {
            // Both tiers when the larger model has been fetched: `"model": "auto"` routes between them.
            modelPaths = [Self.defaultModelPath]
            if FileManager.default.fileExists(atPath: DefaultModel.largeRelativePath) { modelPaths.append(DefaultModel.largeRelativePath) }
        }
        let contextLength = try settings.int(self.context, "SARVAM_CONTEXT", in: 16...Int.max)
        let threads = try settings.int(self.threads, "SARVAM_THREADS", in: 1...Int.max) ?? ProcessInfo.processInfo.activeProcessorCount
        let maxBodyBytes = try settings.int(self.maxBodyBytes, "SARVAM_MAX_BODY_BYTES", in: 1024...Int.max) ?? (4 << 20)
        let drainSeconds = try settings.int(self.drainSeconds, "SARVAM_DRAIN_SECONDS", in: 0...Int.max) ?? 15
        let sessionHours = try settings.int(self.sessionHours, "SARVAM_SESSION_HOURS", in: 1...(24 * 366)) ?? 168
        let levelName = settings.string(self.logLevel, "SARVAM_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ValidationError(
                "--log-level / SARVAM_LOG_LEVEL: expected one of trace, debug, info, notice, warning, error, critical; found \(levelName.debugDescription)"
            )
        }
        var engineOptions = try engineSettings(settings, contextLength: contextLength, threads: threads)
        let listener = try listenerSettings(settings, host: host, port: port)
        let upstreamList = try upstreamConfigurations(settings)
        let tierRouting = try tierRoutingSettings(settings, scheduler: engineOptions.scheduler, upstreams: upstreamList ?? [])
        if try settings.bool(kvSnapshots, "SARVAM_KV_SNAPSHOTS") ?? true {
            guard engineOptions.scheduler.prefixCaching else {
                throw ValidationError(
                    "--kv-snapshots / SARVAM_KV_SNAPSHOTS: KV snapshots need the prefix cache; turn --prefix-cache on or snapshots off")
            }
            engineOptions.snapshotDirectory = (data.resolvedDataDirectory as NSString).appendingPathComponent("kv-snapshots")
        }
        engineOptions.speculative = try settings.bool(speculative, "SARVAM_SPECULATIVE") ?? false
        engineOptions.snapshotBudgetBytes = try settings.int(kvDiskMb, "SARVAM_KV_DISK_MB", in: 0...(1 << 30)).map { $0 << 20 } ?? (4 << 30)
        let cacheMode = settings.string(responseCache, "SARVAM_RESPONSE_CACHE") ?? "user"
        guard let mode = ResponseCacheMode(rawValue: cacheMode.lowercased()) else {
            throw ValidationError(
                "--response-cache / SARVAM_RESPONSE_CACHE: expected user, global or off; found \(cacheMode.debugDescription)")
        }
        engineOptions.responseCache = ResponseCacheSettings(
            mode: mode,
            budgetBytes: try settings.int(responseCacheMb, "SARVAM_RESPONSE_CACHE_MB", in: 0...(1 << 24)).map { $0 << 20 } ?? (64 << 20))

        let format = try settings.logFormat(logFormat)
        var logger = Logger(label: "sarvam.server", factory: { format.handler(label: $0) })
        logger.logLevel = level

        let location = try data.storeLocation(settings)
        let store = try await openChatStore(location, logger: logger)
        logger.info("store opened", metadata: ["store": "\(location.description)"])
        let presetPassword = settings.raw("SARVAM_ADMIN_PASSWORD")
        if let presetPassword {
            do { try Accounts.validatePassword(presetPassword) } catch { throw ValidationError("SARVAM_ADMIN_PASSWORD: \(error)") }
        }
        let accounts = Accounts(store: store)
        if let issued = try await accounts.bootstrapAdmin(presetKey: settings.raw("SARVAM_ADMIN_KEY")) {
            if settings.raw("SARVAM_ADMIN_KEY") != nil {
                Self.say("Created the admin account with the key from SARVAM_ADMIN_KEY (key id \(issued.record.id)).")
            } else {
                Self.say("Created the admin account. Its API key is shown only this once (key id \(issued.record.id)):\n\(issued.key)")
            }
            // A password to sign in on the page with: SARVAM_ADMIN_PASSWORD, else a random one shown once.
            let password = presetPassword ?? Accounts.generatePassword()
            _ = try await accounts.setPassword(userName: Accounts.adminName, password: password)
            if presetPassword != nil {
                Self.say("The admin signs in on the page with the password from SARVAM_ADMIN_PASSWORD.")
            } else {
                Self.say(
                    "Sign in on the page as \(Accounts.adminName) with this password, shown only this once "
                        + "(change it there, or with `sarvam users password \(Accounts.adminName)`):\n\(password)")
            }
        }

        let upstreams = upstreamList.map { Upstreams($0, logger: logger) }
        for provider in upstreams?.providers ?? [] {
            let c = provider.configuration
            logger.info(
                "upstream configured",
                metadata: ["upstream": "\(c.name)", "url": "\(c.baseURL)", "key": "\(c.key == nil ? "none" : "from the environment")"])
        }
        upstreams?.start()
        let catalog = EngineCatalog(upstreams: upstreams)
        let service = ChatService(
            catalog: catalog, store: store,
            // The engine queues and refuses (429): its queue limit is the one admission limit.
            configuration: ChatServerConfiguration(
                maxBodyBytes: maxBodyBytes, drainTimeout: .seconds(drainSeconds), secureCookies: listener.tls != nil,
                sessionLifetime: .seconds(sessionHours * 3600)),
            quotaDefaults: QuotaLimits(
                requestsPerMinute: try settings.int(quotaRequestsPerMinute, "SARVAM_QUOTA_REQUESTS_PER_MINUTE", in: 0...Int.max),
                tokensPerDay: try settings.int(quotaTokensPerDay, "SARVAM_QUOTA_TOKENS_PER_DAY", in: 0...Int.max)),
            tierRouting: tierRouting, logger: logger)
        // The server answers (503 "loading") while the models load.
        engineOptions.logger = logger
        let loader = Task { [logger, engineOptions] in
            do {
                let engines = try await makeTransformerEngines(modelPaths: modelPaths, settings: engineOptions)
                catalog.setReady(engines)
                logger.info("models loaded", metadata: ["models": "\(engines.map(\.modelInfo.id).joined(separator: ","))"])
            } catch {
                catalog.setFailed("\(error)")
                logger.error("could not load the model", metadata: ["error": "\(error)"])
            }
        }
        let jobs = Task { await service.runBackgroundJobs() }
        defer { jobs.cancel() }
        do {
            let scheme = listener.tls == nil ? "http" : "https"
            try await runChatServer(
                service, listener: listener,
                onServerRunning: { boundPort in Self.say("Sarvam is listening on \(scheme)://\(host):\(boundPort)/") },
                onMetricsRunning: { boundPort in
                    Self.say("Metrics (no key) on http://\(listener.metricsAddress?.host ?? ""):\(boundPort)/metrics")
                })
        } catch {
            loader.cancel()
            await upstreams?.shutdown()
            try? await store.close()
            throw error
        }
        loader.cancel()
        await upstreams?.shutdown()
        // Stops the engines and writes the KV snapshots of the conversations still in memory.
        if case .ready(let engines) = catalog.state {
            for engine in engines { engine.close() }
        }
        try await store.close()
        logger.info("store closed; bye")
    }

    /// The upstreams from `--upstream` / SARVAM_UPSTREAM, their keys from SARVAM_UPSTREAM_<NAME>_KEY;
    /// nil when none is set.
    private func upstreamConfigurations(_ settings: Settings) throws -> [UpstreamConfiguration]? {
        var entries = upstream
        if entries.isEmpty, let list = settings.raw("SARVAM_UPSTREAM") {
            entries = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        guard !entries.isEmpty else { return nil }
        let firstByte = try settings.double(upstreamFirstByteTimeout, "SARVAM_UPSTREAM_FIRST_BYTE_TIMEOUT", in: 0.1...3600) ?? 30
        let idle = try settings.double(upstreamIdleTimeout, "SARVAM_UPSTREAM_IDLE_TIMEOUT", in: 0.1...3600) ?? 60
        let refresh = try settings.double(upstreamRefresh, "SARVAM_UPSTREAM_REFRESH", in: 1...86400) ?? 60
        let perUser = try settings.int(maxRequestsPerUser, "SARVAM_MAX_REQUESTS_PER_USER", in: 1...1_000_000) ?? 16
        var configurations: [UpstreamConfiguration] = []
        for entry in entries {
            let parsed: (name: String, baseURL: String)
            do { parsed = try UpstreamConfiguration.parse(entry) } catch { throw ValidationError("--upstream / SARVAM_UPSTREAM: \(error)") }
            guard !configurations.contains(where: { $0.name == parsed.name }) else {
                throw ValidationError("--upstream / SARVAM_UPSTREAM: the name \(parsed.name.debugDescription) is given twice")
            }
            configurations.append(
                UpstreamConfiguration(
                    name: parsed.name, baseURL: parsed.baseURL, key: settings.raw(UpstreamConfiguration.keyVariable(name: parsed.name)),
                    firstByteTimeout: .milliseconds(Int64(firstByte * 1000)), idleTimeout: .milliseconds(Int64(idle * 1000)),
                    refreshInterval: .milliseconds(Int64(refresh * 1000)), retryInterval: .milliseconds(Int64(min(refresh, 5) * 1000)),
                    maxRequestsPerUser: perUser))
        }
        return configurations
    }

    /// Address, TLS and connection limits from the flags and the environment.
    private func listenerSettings(_ settings: Settings, host: String, port: Int) throws -> ListenerSettings {
        var limits = ConnectionLimits()
        if let s = try settings.double(headerTimeout, "SARVAM_HEADER_TIMEOUT", in: 0.1...3600) { limits.headerTimeout = .seconds(s) }
        if let s = try settings.double(idleTimeout, "SARVAM_IDLE_TIMEOUT", in: 0.1...86400) { limits.idleTimeout = .seconds(s) }
        if let n = try settings.int(maxConnections, "SARVAM_MAX_CONNECTIONS", in: 1...1_000_000) { limits.maxConnections = n }
        let metrics = try settings.hostAndPort(metricsAddress, "SARVAM_METRICS_ADDRESS").map { HostAndPort(host: $0.host, port: $0.port) }
        let certificate = settings.string(tlsCert, "SARVAM_TLS_CERT")
        let key = settings.string(tlsKey, "SARVAM_TLS_KEY")
        let files: (certificate: String, key: String)?
        switch (certificate, key) {
        case (nil, nil): files = nil
        case (let certificate?, let key?): files = (certificate, key)
        case (nil, _): throw ValidationError("--tls-key / SARVAM_TLS_KEY is set without --tls-cert / SARVAM_TLS_CERT: give both or neither")
        case (_, nil): throw ValidationError("--tls-cert / SARVAM_TLS_CERT is set without --tls-key / SARVAM_TLS_KEY: give both or neither")
        }
        let tls = try files.map { files in
            do { return try TLSFiles.serverConfiguration(certificatePath: files.certificate, keyPath: files.key) } catch {
                throw ValidationError("--tls-cert / SARVAM_TLS_CERT, --tls-key / SARVAM_TLS_KEY: \(error)")
            }
        }
        return ListenerSettings(host: host, port: port, tls: tls, limits: limits, metricsAddress: metrics)
    }

    /// The engine's settings from the flags and the environment (one policy: a bad value is an error).
    private func engineSettings(_ settings: Settings, contextLength: Int?, threads: Int) throws -> TransformerEngineSettings {
        let defaults = SchedulerSettings()
        var scheduler = SchedulerSettings(
            maxRunningSequences: try settings.int(maxSequences, "SARVAM_MAX_SEQUENCES", in: 1...4096),
            maxRunningPerUser: try settings.int(maxSequencesPerUser, "SARVAM_MAX_SEQUENCES_PER_USER", in: 1...4096),
            queueLimit: try settings.int(queueLimit, "SARVAM_QUEUE_LIMIT", in: 0...100_000) ?? defaults.queueLimit,
            maxAcceptedPerUser: try settings.int(maxRequestsPerUser, "SARVAM_MAX_REQUESTS_PER_USER", in: 1...1_000_000),
            prefillTokensPerStep: try settings.int(prefillTokensPerStep, "SARVAM_PREFILL_TOKENS_PER_STEP", in: 1...65536)
                ?? defaults.prefillTokensPerStep,
            timeToFirstTokenTarget: try settings.double(sloTtft, "SARVAM_SLO_TTFT", in: 0.01...3600) ?? defaults.timeToFirstTokenTarget,
            interTokenLatencyTarget: try settings.double(sloItl, "SARVAM_SLO_ITL", in: 0.001...60) ?? defaults.interTokenLatencyTarget,
            prefixCaching: try settings.bool(prefixCache, "SARVAM_PREFIX_CACHE") ?? defaults.prefixCaching,
            maxCachedPrefixBytes: try settings.int(prefixCacheMb, "SARVAM_PREFIX_CACHE_MB", in: 0...(1 << 24)).map { $0 << 20 }
                ?? defaults.maxCachedPrefixBytes,
            idleCachedPrefixBytes: try settings.int(prefixCacheIdleMb, "SARVAM_PREFIX_CACHE_IDLE_MB", in: 0...(1 << 24)).map { $0 << 20 }
                ?? defaults.idleCachedPrefixBytes)
        scheduler.promptLookup = try settings.bool(promptLookup, "SARVAM_PROMPT_LOOKUP") ?? true
        try scheduler.validate()
        let trace = settings.string(stepTrace, "SARVAM_STEP_TRACE")
        if let trace, !FileManager.default.createFile(atPath: trace, contents: nil) {
            throw ValidationError(
                "--step-trace / SARVAM_STEP_TRACE: cannot write \(trace.debugDescription); check the folder exists and is writable")
        }
        var engine = TransformerEngineSettings(
            contextLength: contextLength, threads: threads,
            kvCacheBytes: try settings.int(kvCacheMb, "SARVAM_KV_CACHE_MB", in: 1...(1 << 24)).map { $0 << 20 },
            scheduler: scheduler, stepTracePath: trace)
        let residency = settings.string(weights, "SARVAM_WEIGHTS") ?? FileResidency.hugePages.rawValue
        guard let held = FileResidency(rawValue: residency.lowercased()) else {
            throw ValidationError("--weights / SARVAM_WEIGHTS: expected huge-pages or mapped, found \(residency.debugDescription)")
        }
        engine.weights = held
        return engine
    }
}
