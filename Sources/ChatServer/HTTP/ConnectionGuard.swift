import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// Limits on the server's connections: how long a client may take to send a request, how long a
/// connection may stay silent, and how many may be open at once.
public struct ConnectionLimits: Sendable {
    /// Time a new connection has to finish its TLS handshake and send a complete request head, and a
    /// keep-alive connection has from the first byte of its next request to the end of its head.
    public var headerTimeout: Duration
    /// Silence allowed between two requests on a connection, and within a request body. Never
    /// applies while a reply is being written (a streamed reply may last as long as it needs).
    public var idleTimeout: Duration
    /// Connections open at once; one beyond it is closed as soon as it is accepted.
    public var maxConnections: Int

    public init(headerTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(60), maxConnections: Int = 512) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }
}

/// Counts open connections against `ConnectionLimits.maxConnections`.
final class ConnectionCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var open = 0
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Takes a place, or returns false when all are taken.
    func tryOpen() -> Bool {
        lock.withLock {
            guard open < limit else { return false }
            open += 1
            return true
        }
    }

    func close() { lock.withLock { open -= 1 } }

    var count: Int { lock.withLock { open } }
}

/// Wraps a server child channel (HTTP/1, TLS, HTTP/2 over TLS) with the connection cap and, under
/// TLS, a handshake deadline (the HTTP layer's own timers start only once the handshake is done).
/// A connection over the cap is closed at once, after its pipeline is set up: failing the setup
/// instead would end the server's accept loop.
struct GuardedChildChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let counter: ConnectionCounter
    let handshakeTimeout: Duration

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let admitted = counter.tryOpen()
        if admitted {
            let counter = self.counter
            channel.closeFuture.whenComplete { _ in counter.close() }
        }
        let value = base.setup(channel: channel, logger: logger)
        // A TLS base has added its handler synchronously; the deadline watches its handshake event.
        if admitted, let tls = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) {
            try? channel.pipeline.syncOperations.addHandler(HandshakeDeadlineHandler(timeout: handshakeTimeout), position: .after(tls))
        }
        guard !admitted else { return value }
        logger.warning("connection refused: too many open connections", metadata: ["limit": "\(counter.limit)"])
        return value.always { _ in channel.close(promise: nil) }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Closes the connection unless its TLS handshake completes within `timeout`.
final class HandshakeDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: Duration) { self.timeout = TimeAmount(timeout) }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { context.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            timer?.cancel()
            timer = nil
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension HandshakeDeadlineHandler: Sendable {}
