// Hand check of floe-nexmark against the official generator (see
// check.sh): drives the harness's PersonGenerator, AuctionGenerator and
// BidGenerator over the splits GeneratorConfig.split makes, with one
// SplittableRandom per event seeded the way floe-nexmark seeds it, and
// prints the lines `cargo run -p floe-nexmark --example dump` prints.
import com.github.nexmark.flink.NexmarkConfiguration;
import com.github.nexmark.flink.generator.GeneratorConfig;
import com.github.nexmark.flink.generator.model.AuctionGenerator;
import com.github.nexmark.flink.generator.model.BidGenerator;
import com.github.nexmark.flink.generator.model.PersonGenerator;
import com.github.nexmark.flink.model.Auction;
import com.github.nexmark.flink.model.Bid;
import com.github.nexmark.flink.model.Person;
import java.io.BufferedWriter;
import java.io.OutputStreamWriter;
import java.util.SplittableRandom;

public class NexmarkDump {
    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    public static void main(String[] args) throws Exception {
        long events = Long.parseLong(args[0]);
        int generators = Integer.parseInt(args[1]);
        long seed = args.length > 2 ? Long.parseLong(args[2]) : 0;
        int tps = args.length > 3 ? Integer.parseInt(args[3]) : 10_000_000;
        NexmarkConfiguration conf = new NexmarkConfiguration();
        conf.numEvents = events;
        conf.numEventGenerators = generators;
        conf.firstEventRate = tps;
        conf.nextEventRate = tps;
        GeneratorConfig all = new GeneratorConfig(conf, 1_436_918_400_000L, 1, events, -1, 1);
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out), 1 << 16);
        for (GeneratorConfig c : all.split(generators)) {
            for (long k = 0; k < c.maxEvents; k++) {
                long id = c.firstEventId + c.nextAdjustedEventNumber(k);
                long ts = c.timestampForEvent(c.nextEventNumber(k));
                SplittableRandom r = new SplittableRandom(mix64(id ^ mix64(seed)));
                long rem = id % c.totalProportion;
                if (rem < c.personProportion) {
                    Person p = PersonGenerator.nextPerson(id, r, ts, c);
                    out.write("P\t" + p.id + "\t" + p.name + "\t" + p.emailAddress + "\t" + p.creditCard
                        + "\t" + p.city + "\t" + p.state + "\t" + p.dateTime.toEpochMilli() + "\t"
                        + p.extra.length() + "\n");
                } else if (rem < c.personProportion + c.auctionProportion) {
                    Auction a = AuctionGenerator.nextAuction(k, id, r, ts, c);
                    out.write("A\t" + a.id + "\t" + a.itemName + "\t" + a.description + "\t" + a.initialBid
                        + "\t" + a.reserve + "\t" + a.dateTime.toEpochMilli() + "\t"
                        + a.expires.toEpochMilli() + "\t" + a.seller + "\t" + a.category + "\t"
                        + a.extra.length() + "\n");
                } else {
                    Bid b = BidGenerator.nextBid(id, r, ts, c);
                    out.write("B\t" + b.auction + "\t" + b.bidder + "\t" + b.price + "\t" + b.channel
                        + "\t" + b.dateTime.toEpochMilli() + "\t" + b.extra.length() + "\n");
                }
            }
        }
        out.flush();
    }
}
