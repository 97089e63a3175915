#!/usr/bin/env python3
"""A TCP proxy that delays every byte by DELAY seconds in each direction,
keeping order and throughput (no netem here: the kernel lacks sch_netem).
Usage: latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_SECONDS"""
import asyncio, sys, time

async def pump(reader, writer, delay):
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(sender())
    while True:
        data = await reader.read(1 << 16)
        await queue.put((time.monotonic() + delay, data or None))
        if not data:
            break
    await task

async def main(listen, target, delay):
    async def handle(cr, cw):
        tr, tw = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(cr, tw, delay), pump(tr, cw, delay), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
