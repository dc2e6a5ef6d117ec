import NIOCore
import NIOHTTPTypes

/// Closes an HTTP connection (or HTTP/2 stream) that is slow to send its request, so that silent
/// or trickling clients cannot hold connections open:
/// - a new connection must send a complete request head within `headerTimeout`;
/// - between requests (keep-alive) it may stay silent for `idleTimeout`, and once the first bytes of
///   the next request arrive, the head must be complete within `headerTimeout`;
/// - a request body may pause for at most `idleTimeout` between two parts.
/// While a request is being answered no timer runs, so a streamed reply is never cut however long
/// it lasts. Sits after the HTTP codec (it sees request parts; `channelReadComplete` tells it that
/// bytes arrived even when they did not complete a part).
final class RequestTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    enum State: Equatable {
        /// No request yet, or the head of one has started to arrive.
        case awaitingHead
        /// Keep-alive: the last response is written and nothing of the next request has arrived.
        case idle
        /// Between the head and the end of a request.
        case readingBody
        /// Every request read is being answered.
        case responding
    }

    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private(set) var state = State.awaitingHead
    /// Requests read whose response has not ended.
    private var unanswered = 0
    private var timer: Scheduled<Void>?
    /// The read batch being completed ended a request (its `channelReadComplete` is not news).
    private var readEndedRequest = false
    /// Bytes of the next request arrived while the last one was being answered (a client may send
    /// its next head as soon as it has the body, before the response's end passes here): once the
    /// response ends, the header timeout applies, not the idle one.
    private var nextHeadStarted = false

    init(headerTimeout: Duration, idleTimeout: Duration) {
        self.headerTimeout = TimeAmount(headerTimeout)
        self.idleTimeout = TimeAmount(idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(headerTimeout, context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    func channelActive(context: ChannelHandlerContext) {
        if timer == nil && state == .awaitingHead { arm(headerTimeout, context: context) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            unanswered += 1
            state = .readingBody
            nextHeadStarted = false
            arm(idleTimeout, context: context)
        case .body:
            if state == .readingBody { arm(idleTimeout, context: context) }
        case .end:
            if unanswered == 0 {
                // Answered before its body was read (a refusal): the connection is idle again.
                state = .idle
                arm(idleTimeout, context: context)
            } else {
                state = .responding
                readEndedRequest = true
                disarm()
            }
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Bytes arrived on an idle keep-alive connection: the next request's head has begun.
        if state == .idle {
            state = .awaitingHead
            arm(headerTimeout, context: context)
        } else if state == .responding && !readEndedRequest {
            nextHeadStarted = true
        }
        readEndedRequest = false
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            if unanswered == 0 && state == .responding {
                state = nextHeadStarted ? .awaitingHead : .idle
                arm(nextHeadStarted ? headerTimeout : idleTimeout, context: context)
                nextHeadStarted = false
            }
        }
        context.write(data, promise: promise)
    }

    private func arm(_ timeout: TimeAmount, context: ChannelHandlerContext) {
        disarm()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            guard let self else { return }
            self.timer = nil
            context.close(promise: nil)
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}

@available(*, unavailable)
extension RequestTimeoutHandler: Sendable {}
