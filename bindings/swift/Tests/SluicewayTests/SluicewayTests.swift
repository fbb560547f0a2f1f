// Swift tests against a real broker (`SLUICEWAY_BIN`, default ../../target/debug/sluiceway) and
// over the golden vectors (`SLUICEWAY_GOLDEN`, default ../../testdata/golden), run by
// `make test-swift` only where a Swift toolchain exists.
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

    func testGoldenVectorsDecodeToTheJsonBesideEachFile() throws {
        let dir = URL(fileURLWithPath: ProcessInfo.processInfo.environment["SLUICEWAY_GOLDEN"] ?? "../../testdata/golden")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".bin") }.sorted()
        XCTAssertFalse(files.isEmpty)
        for file in files {
            let json = dir.appendingPathComponent(String(file.dropLast(4)) + ".json")
            let expected = (try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any])["records"] as! [[String: Any]]
            let records = try decodeMessageSet(data: Data(contentsOf: dir.appendingPathComponent(file)))
            XCTAssertEqual(records.count, expected.count, file)
            for (r, e) in zip(records, expected) {
                XCTAssertEqual(r.offset, (e["offset"] as! NSNumber).int64Value, file)
                XCTAssertEqual(r.timestamp, (e["timestamp"] as? NSNumber)?.int64Value ?? -1, file)
                if let type = e["timestamp_type"] as? String {
                    XCTAssertEqual(r.timestampType == .createTime ? "CreateTime" : "LogAppendTime", type, file)
                }
                XCTAssertEqual(r.key?.base64EncodedString(), e["key"] as? String, file)
                XCTAssertEqual(r.value?.base64EncodedString(), e["value"] as? String, file)
                // Magic 2 vectors list headers (key, base64 value or null); the others have none.
                let headers = (e["headers"] as? [[String: Any]]) ?? []
                XCTAssertEqual(r.headers.map { $0.key }, headers.map { $0["key"] as! String }, file)
                XCTAssertEqual(r.headers.map { $0.value?.base64EncodedString() }, headers.map { $0["value"] as? String }, file)
            }
        }
    }

    func testAdminAsyncMethodsAnswerLikeTheBlockingOnes() async throws {
        let t = try newTopic(3)
        let admin = try Admin(config: ["bootstrap.servers": Self.address])
        let topic = try await admin.describeTopic(name: t)
        XCTAssertEqual(topic.partitions.map { $0.partition }, [0, 1, 2])
        let topics = try await admin.listTopics()
        XCTAssertTrue(topics.contains { $0.name == t })
        let latest = try await admin.listOffsets(queries: [OffsetQuery(topic: t, partition: 2, spec: .latest)])
        XCTAssertEqual(latest[0].listed?.offset, 0)
        do {
            _ = try await admin.describeTopic(name: "no-such-topic-swift-async")
            XCTFail("an unknown topic must throw")
        } catch let e as SluicewayError {
            XCTAssertEqual(e.code, "UNKNOWN_TOPIC_OR_PARTITION")
        }
    }

    func testAdminDescribesTopicsGroupsAndOffsets() throws {
        let t = try newTopic(2)
        let admin = try Admin(config: ["bootstrap.servers": Self.address])
        let topic = try admin.describeTopicBlocking(name: t)
        XCTAssertEqual(topic.partitions.map { $0.partition }, [0, 1])
        XCTAssertTrue(topic.partitions.allSatisfy { $0.leader != nil && $0.isr == $0.replicas })
        XCTAssertThrowsError(try admin.describeTopicBlocking(name: "no-such-topic-swift")) { e in
            XCTAssertEqual((e as? SluicewayError)?.code, "UNKNOWN_TOPIC_OR_PARTITION")
        }

        let producer = try Producer(config: ["bootstrap.servers": Self.address])
        let records = (0..<10).map { ProducerRecord(topic: t, value: Data("v\($0)".utf8), partition: 0) }
        XCTAssertTrue(try producer.sendBatchBlocking(records: records, timeout: 30).allSatisfy { $0.metadata != nil })
        try producer.closeBlocking(timeout: nil)
        let offsets = try admin.listOffsetsBlocking(queries: [
            OffsetQuery(topic: t, partition: 0, spec: .earliest),
            OffsetQuery(topic: t, partition: 0, spec: .latest),
            OffsetQuery(topic: "no-such-topic-swift", partition: 0, spec: .latest),
        ])
        XCTAssertEqual(offsets[0].listed?.offset, 0)
        XCTAssertEqual(offsets[1].listed?.offset, 10)
        XCTAssertEqual(offsets[2].error?.code, "UNKNOWN_TOPIC_OR_PARTITION")

        let group = "swift-\(UUID().uuidString.prefix(8))"
        let consumer = try Consumer(config: [
            "bootstrap.servers": Self.address, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": "false",
        ])
        try consumer.subscribeBlocking(topics: [t])
        var got = 0
        let deadline = Date().addingTimeInterval(30)
        while got < 10 && Date() < deadline { got += try consumer.pollBlocking(timeout: 0.2).count }
        XCTAssertEqual(got, 10)
        try consumer.commitBlocking()
        XCTAssertEqual(try admin.listGroupsBlocking().first { $0.groupId == group }?.state, .stable)
        let described = try admin.describeGroupBlocking(groupId: group)
        XCTAssertEqual(described.members.count, 1)
        XCTAssertEqual(Set(described.members.flatMap { $0.assignment }), Set([0, 1].map { TopicPartition(topic: t, partition: Int32($0)) }))
        XCTAssertEqual(try admin.groupLagBlocking(groupId: group).compactMap { $0.lag }.reduce(0, +), 0)
        try consumer.closeBlocking(timeout: nil)
        XCTAssertEqual(try admin.describeGroupBlocking(groupId: "nobody-\(UUID().uuidString)").state, .dead)
    }
}
