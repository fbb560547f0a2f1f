// Swift tests against a real broker (`SLUICEWAY_BIN`, default ../../target/debug/sluiceway),
// run by `make test-swift` only where a Swift toolchain exists.
import Foundation
import XCTest
@testable import Sluiceway

final class SluicewayTests: XCTestCase {
    static var broker: Process?
    static var address = ""

    override class func setUp() {
        let bin = ProcessInfo.processInfo.environment["SLUICEWAY_BIN"] ?? "../../target/debug/sluiceway"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluiceway-swift-\(UUID().uuidString)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["broker", "--data-dir", dir.path, "--listen", "127.0.0.1:0", "--group-initial-rebalance-delay-ms", "0"]
        let out = Pipe()
        p.standardOutput = out
        try! p.run()
        var text = ""
        while !text.contains("\n") {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        address = text.components(separatedBy: "\n")[0].replacingOccurrences(of: "listening on ", with: "")
        broker = p
    }

    override class func tearDown() {
        broker?.terminate()
    }

    func newTopic(_ partitions: Int32) throws -> String {
        let name = "t-\(UUID().uuidString.prefix(8))"
        _ = try Admin(config: ["bootstrap.servers": Self.address])
            .createTopicBlocking(name: name, partitions: partitions, replicationFactor: nil, configs: [:])
        return name
    }

    func testRoundTripWithAsyncSequence() async throws {
        let t = try newTopic(3)
        let producer = try Producer(config: ["bootstrap.servers": Self.address])
        let records = (0..<100).map { ProducerRecord(topic: t, value: Data("v\($0)".utf8), key: Data("k\($0 % 7)".utf8)) }
        let results = try await producer.sendBatch(records: records)
        XCTAssertTrue(results.allSatisfy { $0.metadata != nil })
        try producer.closeBlocking(timeout: nil)

        let consumer = try Consumer(config: ["bootstrap.servers": Self.address, "auto.offset.reset": "earliest"])
        try consumer.assign(partitions: (0..<3).map { TopicPartition(topic: t, partition: Int32($0)) })
        var seen = Set<String>()
        for try await record in consumer.records(pollTimeout: 0.2) {
            seen.insert(String(decoding: record.value ?? Data(), as: UTF8.self))
            if seen.count == 100 { break }
        }
        XCTAssertEqual(seen, Set((0..<100).map { "v\($0)" }))
        try consumer.closeBlocking(timeout: nil)
    }

    func testTypedErrors() async throws {
        let producer = try Producer(config: ["bootstrap.servers": Self.address])
        do {
            _ = try await producer.send(record: ProducerRecord(topic: "no-such-topic-swift", value: Data("x".utf8)))
            XCTFail("sent to a missing topic")
        } catch let e as SluicewayError {
            XCTAssertEqual(e.code, "UNKNOWN_TOPIC_OR_PARTITION")
            XCTAssertTrue(e.retriable)
        }
        XCTAssertThrowsError(try Producer(config: ["bootstrap.servers": Self.address, "linger.ms": "soon"])) { e in
            XCTAssertEqual((e as? SluicewayError)?.code, "INVALID_CONFIG")
        }
    }

    func testCloseThenPoll() throws {
        let t = try newTopic(1)
        let consumer = try Consumer(config: ["bootstrap.servers": Self.address])
        try consumer.assign(partitions: [TopicPartition(topic: t, partition: 0)])
        try consumer.closeBlocking(timeout: nil)
        XCTAssertThrowsError(try consumer.pollBlocking(timeout: 5)) { e in
            XCTAssertEqual((e as? SluicewayError)?.code, "CLOSED")
        }
    }
}
