// End-to-end latency at a fixed rate against Apache Kafka, measured the way
// `sluiceway bench e2e --rate` measures Sluiceway: message i is intended to be sent at
// start + i/rate, its value carries that intended time (8 bytes, ns since the run's base) and
// i (8 more bytes), and a consumer in the same process records receive time - intended send
// time, so a stall counts against every message it delayed (no coordinated omission). Kafka's
// own EndToEndLatency tool sends one message at a time instead.
//
// Run with the Kafka classpath (single-file source launch, JDK 11+):
//   java -cp "$(bench/kafka.sh classpath)" bench/kafka/E2eLatency.java \
//       BOOTSTRAP TOPIC MESSAGES RATE SIZE PARTITIONS REPLICATION ACKS LINGER_MS BATCH_BYTES
// Prints one JSON object (the keys of `sluiceway bench --json`). The first MESSAGES/10 messages
// (at least 1) warm the JVM's JIT up and are not measured; they are sent at the same rate
// before the measured ones.
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.locks.LockSupport;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class E2eLatency {
  public static void main(String[] a) throws Exception {
    if (a.length != 10) {
      System.err.println(
          "usage: E2eLatency BOOTSTRAP TOPIC MESSAGES RATE SIZE PARTITIONS REPLICATION ACKS LINGER_MS BATCH_BYTES");
      System.exit(2);
    }
    String bootstrap = a[0], topic = a[1], acks = a[7];
    int messages = Integer.parseInt(a[2]);
    double rate = Double.parseDouble(a[3]);
    int size = Integer.parseInt(a[4]);
    int partitions = Integer.parseInt(a[5]);
    short replication = Short.parseShort(a[6]);
    if (size < 16 || messages < 1 || rate <= 0) {
      System.err.println("SIZE must be >= 16, MESSAGES >= 1, RATE > 0");
      System.exit(2);
    }

    Properties ap = new Properties();
    ap.put("bootstrap.servers", bootstrap);
    try (Admin admin = Admin.create(ap)) {
      admin.createTopics(List.of(new NewTopic(topic, partitions, replication))).all().get();
    } catch (ExecutionException e) {
      if (!(e.getCause() instanceof TopicExistsException)) throw e;
    }

    Properties cp = new Properties();
    cp.put("bootstrap.servers", bootstrap);
    cp.put("enable.auto.commit", "false");
    cp.put("fetch.max.wait.ms", "100");
    cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
    cp.put("value.deserializer", ByteArrayDeserializer.class.getName());
    Properties pp = new Properties();
    pp.put("bootstrap.servers", bootstrap);
    pp.put("acks", acks);
    pp.put("linger.ms", a[8]);
    pp.put("batch.size", a[9]);
    pp.put("key.serializer", ByteArraySerializer.class.getName());
    pp.put("value.serializer", ByteArraySerializer.class.getName());

    final int warmup = Math.max(1, messages / 10);
    final int total = warmup + messages;
    final long base = System.nanoTime();
    final long[] lat = new long[messages];
    final int[] seen = {0};
    final int[] got = {0};
    CountDownLatch ready = new CountDownLatch(1);
    Thread reader =
        new Thread(
            () -> {
              try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp)) {
                List<TopicPartition> tps = new ArrayList<>();
                for (PartitionInfo p : c.partitionsFor(topic)) {
                  tps.add(new TopicPartition(topic, p.partition()));
                }
                c.assign(tps);
                c.seekToEnd(tps);
                for (TopicPartition tp : tps) c.position(tp);
                ready.countDown();
                long idleSince = System.nanoTime();
                while (seen[0] < total) {
                  ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(100));
                  long now = System.nanoTime() - base;
                  if (rs.isEmpty()) {
                    if (System.nanoTime() - idleSince > 30_000_000_000L) break;
                    continue;
                  }
                  idleSince = System.nanoTime();
                  for (ConsumerRecord<byte[], byte[]> r : rs) {
                    ByteBuffer v = ByteBuffer.wrap(r.value());
                    long sent = v.getLong();
                    long index = v.getLong();
                    seen[0]++;
                    if (index >= warmup && got[0] < messages) lat[got[0]++] = now - sent;
                  }
                }
              }
            });
    reader.start();
    ready.await();

    long start = System.nanoTime();
    long measuredStart = start;
    double stepNs = 1e9 / rate;
    try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp)) {
      for (int i = 0; i < total; i++) {
        long intended = start + (long) (i * stepNs);
        if (i == warmup) measuredStart = intended;
        long wait = intended - System.nanoTime();
        if (wait > 0) LockSupport.parkNanos(wait);
        byte[] v = new byte[size];
        ByteBuffer.wrap(v).putLong(intended - base).putLong(i);
        p.send(new ProducerRecord<>(topic, v));
      }
      p.flush();
    }
    start = measuredStart;
    reader.join();
    double seconds = (System.nanoTime() - start) / 1e9;
    int n = got[0];
    long[] s = Arrays.copyOf(lat, n);
    Arrays.sort(s);
    System.out.printf(
        "{\"client\":\"java\",\"target\":\"kafka\",\"mode\":\"e2e\",\"topic\":\"%s\",\"size\":%d,"
            + "\"messages\":%d,\"seconds\":%.6f,\"msgs_per_sec\":%.3f,\"mb_per_sec\":%.6f,"
            + "\"latency\":\"intended send to receive\",\"rate\":%.0f,\"p50_ms\":%.3f,"
            + "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"acks\":\"%s\"}%n",
        topic, size, n, seconds, n / seconds, n * (double) size / seconds / 1e6, rate,
        q(s, 0.5), q(s, 0.99), q(s, 0.999), n == 0 ? 0.0 : s[n - 1] / 1e6, acks);
    if (n < messages) {
      System.err.printf("E2eLatency: received %d of %d messages%n", n, messages);
      System.exit(1);
    }
  }

  /** The q-quantile in ms (nearest rank), 0 when empty. */
  static double q(long[] sorted, double q) {
    if (sorted.length == 0) return 0.0;
    int i = (int) Math.ceil(q * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, i))] / 1e6;
  }
}
