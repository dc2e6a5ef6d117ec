import Foundation

/// The loaded models. The server starts answering before they are loaded (`/health` and chat
/// routes answer 503 until `setReady`), so the catalogue's state changes once while it runs.
public final class EngineCatalog: @unchecked Sendable {
    public enum State: Sendable {
        case loading
        case ready([any ChatEngine])
        case failed(String)
    }

    private let lock = NSLock()
    private var _state: State

    public init(state: State = .loading) { _state = state }
    public convenience init(engines: [any ChatEngine]) { self.init(state: .ready(engines)) }

    public var state: State { lock.withLock { _state } }
    public func setReady(_ engines: [any ChatEngine]) { lock.withLock { _state = .ready(engines) } }
    public func setFailed(_ message: String) { lock.withLock { _state = .failed(message) } }

    public var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    public var models: [ModelInfo] {
        if case .ready(let engines) = state { return engines.map(\.modelInfo) }
        return []
    }

    /// The engine for `model`, or the first one when `model` is nil or empty.
    public func engine(named model: String?) throws -> any ChatEngine {
        switch state {
        case .loading: throw APIError.loading
        case .failed(let message): throw APIError.unavailable("The model failed to load: \(message)")
        case .ready(let engines):
            guard let first = engines.first else { throw APIError.unavailable("No model is loaded.") }
            guard let model, !model.isEmpty else { return first }
            if model == EngineCatalog.autoModel { return tiers?.light ?? first }
            if let engine = engines.first(where: { $0.modelInfo.id == model }) { return engine }
            throw APIError.modelNotFound(model, available: engines.map(\.modelInfo.id))
        }
    }
}
