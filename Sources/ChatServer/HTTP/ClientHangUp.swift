import Foundation
import NIOCore

/// Notices a client that hangs up: the end of its input (HTTP/1: the server lets clients half-close,
/// so their FIN arrives as `inputClosed` rather than closing the channel) or the channel closing
/// (an HTTP/2 stream reset, a dropped connection). A handler that writes nothing until its reply is
/// complete has no other way to learn that nobody waits for it any more.
final class ClientHangUpHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var hungUp = false
    private var watchers: [ObjectIdentifier: @Sendable () -> Void] = [:]

    func handlerRemoved(context: ChannelHandlerContext) { fire() }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { fire() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fire()
        context.fireChannelInactive()
    }

    private func fire() {
        hungUp = true
        let actions = watchers.values
        watchers = [:]
        for action in actions { action() }
    }

    fileprivate func add(_ watch: HangUpWatch, _ action: @escaping @Sendable () -> Void) {
        if hungUp { action() } else { watchers[ObjectIdentifier(watch)] = action }
    }

    fileprivate func remove(_ watch: HangUpWatch) { watchers[ObjectIdentifier(watch)] = nil }
}

@available(*, unavailable)
extension ClientHangUpHandler: Sendable {}

/// A registration with the `ClientHangUpHandler` of a channel: its action runs once if the client
/// hangs up before `cancel()`. Without such a handler (a test channel) the channel's close counts.
final class HangUpWatch: Sendable {
    private let channel: any Channel

    init(channel: any Channel, action: @escaping @Sendable () -> Void) {
        self.channel = channel
        channel.eventLoop.execute { [self] in
            if let handler = try? channel.pipeline.syncOperations.handler(type: ClientHangUpHandler.self) {
                handler.add(self, action)
            } else {
                channel.closeFuture.whenComplete { _ in action() }
            }
        }
    }

    func cancel() {
        channel.eventLoop.execute { [self] in
            (try? channel.pipeline.syncOperations.handler(type: ClientHangUpHandler.self))?.remove(self)
        }
    }
}

/// Runs `operation` in a task of its own that is cancelled when the client of `channel` hangs up (or
/// the calling task is cancelled). Returns its result and whether the client had hung up by then.
func cancellingOnHangUp<T: Sendable>(
    _ channel: (any Channel)?, _ operation: @escaping @Sendable () async -> T
) async -> (result: T, hungUp: Bool) {
    guard let channel else { return (await operation(), false) }
    let task = Task { await operation() }
    let flag = HangUpFlag()
    let watch = HangUpWatch(channel: channel) {
        flag.set()
        task.cancel()
    }
    let result = await withTaskCancellationHandler {
        await task.value
    } onCancel: {
        task.cancel()
    }
    watch.cancel()
    return (result, flag.isSet)
}

private final class HangUpFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
