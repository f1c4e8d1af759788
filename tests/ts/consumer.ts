// Reads token:* and price:* keys the way the desk's TypeScript programs do, with the npm `redis`
// client, and prints what it read as JSON: {"tokens": {...}, "prices": {...}, "pushed": {...}}.
// Usage: node dist/consumer.js REDIS_URL SYMBOL
import { createClient } from "redis";

interface Price {
  Last: number;
  Bid: number;
  Ask: number;
  Volume?: number;
  High?: number;
  Low?: number;
  Timestamp: number;
}

async function main(): Promise<void> {
  const [url, symbol] = process.argv.slice(2);
  const client = createClient({ url });
  await client.connect();
  const tokens: Record<string, string | null> = {};
  for await (const keys of client.scanIterator({ MATCH: "token:*", COUNT: 100 })) {
    for (const key of keys) {
      tokens[key] = await client.get(key); // plain GET token:{NAME}, as the reference says
    }
  }
  const raw = await client.get(`price:${symbol}:latest`);
  const latest: Price | null = raw === null ? null : (JSON.parse(raw) as Price);

  // One update pushed on the channel after we subscribe (Python publishes it on our signal).
  const subscriber = client.duplicate();
  await subscriber.connect();
  const pushed = new Promise<Price>((resolve) => {
    void subscriber.subscribe(`price:${symbol}`, (message: string) => resolve(JSON.parse(message) as Price));
  });
  await client.set("ts-consumer:subscribed", "1", { EX: 30 });
  const update = await pushed;

  process.stdout.write(JSON.stringify({ tokens, latest, pushed: update }) + "\n");
  await subscriber.quit();
  await client.quit();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
