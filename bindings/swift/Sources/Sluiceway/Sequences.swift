// AsyncSequences over the consumer's suspending poll: the Swift counterpart of the Kotlin
// layer's Flows. Each step is one core poll; cancelling the task takes no records.
import Foundation

/// The records of `Consumer.poll`, one at a time, until the task is cancelled or poll throws.
public struct RecordSequence: AsyncSequence {
    public typealias Element = Record
    let consumer: Consumer
    let pollTimeout: TimeInterval

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: Consumer
        let pollTimeout: TimeInterval
        var buffered: [Record] = []

        public mutating func next() async throws -> Record? {
            while buffered.isEmpty {
                try Task.checkCancellation()
                buffered = try await consumer.poll(timeout: pollTimeout)
            }
            return buffered.removeFirst()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(consumer: consumer, pollTimeout: pollTimeout)
    }
}

/// Every non-empty `Consumer.pollBatch`: records, or rebalance events (commit on `.revoked`).
public struct PollBatchSequence: AsyncSequence {
    public typealias Element = PollBatch
    let consumer: Consumer
    let pollTimeout: TimeInterval
    let maxRecords: UInt32?

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: Consumer
        let pollTimeout: TimeInterval
        let maxRecords: UInt32?

        public mutating func next() async throws -> PollBatch? {
            while true {
                try Task.checkCancellation()
                let batch = try await consumer.pollBatch(timeout: pollTimeout, maxRecords: maxRecords)
                if !batch.records.isEmpty || !batch.events.isEmpty { return batch }
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(consumer: consumer, pollTimeout: pollTimeout, maxRecords: maxRecords)
    }
}

extension Consumer {
    /// `for try await record in consumer.records(pollTimeout: 1) { … }`
    public func records(pollTimeout: TimeInterval) -> RecordSequence {
        RecordSequence(consumer: self, pollTimeout: pollTimeout)
    }

    /// Records and rebalance events, batch by batch.
    public func batches(pollTimeout: TimeInterval, maxRecords: UInt32? = nil) -> PollBatchSequence {
        PollBatchSequence(consumer: self, pollTimeout: pollTimeout, maxRecords: maxRecords)
    }
}

extension SluicewayError {
    /// The core's error code name (`UNKNOWN_TOPIC_OR_PARTITION`, `CLOSED`, …).
    public var code: String {
        switch self {
        case let .Failed(code, _, _): return code
        }
    }

    public var retriable: Bool {
        switch self {
        case let .Failed(_, _, retriable): return retriable
        }
    }
}
