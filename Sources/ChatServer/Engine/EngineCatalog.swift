import Foundation

/// The loaded models, and the models of the upstreams (`NAME/MODEL`). The server starts answering
/// before the local ones are loaded (`/health` and chat routes answer 503 until `setReady`), so the
/// catalogue's state changes once while it runs; upstream models come and go with their lists.
public final class EngineCatalog: @unchecked Sendable {
    public enum State: Sendable {
        case loading
        case ready([any ChatEngine])
        case failed(String)
    }

    private let lock = NSLock()
    private var _state: State
    public let upstreams: Upstreams?

    public init(state: State = .loading, upstreams: Upstreams? = nil) {
        _state = state
        self.upstreams = upstreams
    }
    public convenience init(engines: [any ChatEngine], upstreams: Upstreams? = nil) {
        self.init(state: .ready(engines), upstreams: upstreams)
    }

    public var state: State { lock.withLock { _state } }
    public func setReady(_ engines: [any ChatEngine]) { lock.withLock { _state = .ready(engines) } }
    public func setFailed(_ message: String) { lock.withLock { _state = .failed(message) } }

    public var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    public var models: [ModelInfo] {
        let upstream = upstreams?.models ?? []
        if case .ready(let engines) = state { return engines.map(\.modelInfo) + upstream }
        return []
    }

    /// The engine for `model`, or the first local one when `model` is nil or empty. A name with an
    /// upstream's prefix goes to that upstream whatever the local models' state.
    public func engine(named model: String?) throws -> any ChatEngine {
        if let model, let upstreams, let engine = try upstreams.engine(named: model) { return engine }
        switch state {
        case .loading: throw APIError.loading
        case .failed(let message): throw APIError.unavailable("The model failed to load: \(message)")
        case .ready(let engines):
            guard let first = engines.first else { throw APIError.unavailable("No model is loaded.") }
            guard let model, !model.isEmpty else { return first }
            if model == EngineCatalog.autoModel { return tiers?.light ?? first }
            if let engine = engines.first(where: { $0.modelInfo.id == model }) { return engine }
            throw APIError.modelNotFound(model, available: models.map(\.id))
        }
    }
}
