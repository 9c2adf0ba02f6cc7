#!/usr/bin/env node
// A libutp (master) peer for the uTP interop tests: the npm package `utp-native` 2.5.3, which
// wraps bittorrent/libutp 2b364cb (INTEROP §8). One connection, then exit.
//
//   node libutp_peer.js (--listen PORT | --connect HOST:PORT) [options]
//
//   --send N          send N bytes of the test pattern (byte i = top byte of i * 2654435761
//                     mod 2^32; utp_interop::harness::libutp_native::pattern), then end()
//   --send-file PATH  send the file's contents instead, then end()
//   --no-end          do not end() after sending (a receiver ends when the peer's FIN comes)
//   --early-end       end() (half-close) the moment the connection opens, before any data
//   --no-end-on-eof   do not answer the peer's FIN with our own end()
//   --save PATH       also write what arrives to PATH
//   --linger-ms MS    keep the UDP socket open this long after `close` (default 3000), so
//                     late packets from the peer meet libutp, not an ICMP port unreachable
//   --timeout-ms MS   give up after this long (default 120000): log `timeout`, exit 2
//
// The socket is created with allowHalfOpen: true, so the peer's FIN (`end`) does not end our
// side. A listener binds 0.0.0.0 and takes the first connection only. The connection is
// destroyed (utp_close) once both sides ended; libutp reports `close` when it has freed the
// socket, i.e. the close completed. "`end` and no `close`" is a failed close.
//
// stdout: one JSON object per line, each with `t` (ms since start) and `event`:
//   {"event":"listening","port":N}
//   {"event":"connection","remote":"IP:PORT"}     accepted, or (--connect) the SYN is going out
//   {"event":"connected"}                         (--connect) the SYN was answered
//   {"event":"progress","rx":N,"tx":N}            every 500 ms while bytes move
//   {"event":"sent","bytes":N}                    libutp took the last byte
//   {"event":"ending","why":"sent"|"eof"|"early"} we call end()
//   {"event":"finish"}                            end() done: FIN queued after the data
//   {"event":"end","bytes":N,"sha1":HEX}          the peer's FIN, after N bytes (SHA-1 of them)
//   {"event":"error","code":"UTP_ECONNRESET",...} libutp's error (ECONNREFUSED, ECONNRESET,
//                                                  ETIMEDOUT, UNKNOWN) or a local one
//   {"event":"close","rx":N,"sha1":HEX,"tx":N,"ended":bool,"error":CODE|null}
//   {"event":"ignored","remote":...}             a second incoming connection, destroyed
//   {"event":"timeout",...}, {"event":"exit","code":N}
'use strict'

const crypto = require('crypto')
const fs = require('fs')
const utp = require('utp-native') // found through NODE_PATH (the harness sets it)

const started = process.hrtime.bigint()
const now = () => Number(process.hrtime.bigint() - started) / 1e6

function emit (event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ t: Math.round(now() * 1000) / 1000, event }, fields)) + '\n')
}

function usage (why) {
  process.stderr.write(`libutp_peer.js: ${why}\n`)
  process.exit(64)
}

function parseArgs (argv) {
  const o = { send: null, sendFile: null, end: true, earlyEnd: false, endOnEof: true, save: null, lingerMs: 3000, timeoutMs: 120000 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`))
    switch (a) {
      case '--listen': o.listen = Number(next()); break
      case '--connect': {
        const v = next()
        const at = v.lastIndexOf(':')
        if (at < 0) usage('--connect HOST:PORT')
        o.connect = { host: v.slice(0, at), port: Number(v.slice(at + 1)) }
        break
      }
      case '--send': o.send = Number(next()); break
      case '--send-file': o.sendFile = next(); break
      case '--no-end': o.end = false; break
      case '--early-end': o.earlyEnd = true; break
      case '--no-end-on-eof': o.endOnEof = false; break
      case '--save': o.save = next(); break
      case '--linger-ms': o.lingerMs = Number(next()); break
      case '--timeout-ms': o.timeoutMs = Number(next()); break
      default: usage(`unknown argument ${a}`)
    }
  }
  if ((o.listen === undefined) === (o.connect === undefined)) usage('one of --listen PORT, --connect HOST:PORT')
  if (o.earlyEnd && (o.send !== null || o.sendFile)) usage('--early-end sends nothing')
  return o
}

// The test pattern: byte i is the top byte of the 32-bit product i * 2654435761 (Knuth's
// multiplicative hash), so a shifted, repeated or reordered stretch changes the SHA-1.
function pattern (offset, len) {
  const b = Buffer.allocUnsafe(len)
  for (let j = 0; j < len; j++) b[j] = Math.imul(offset + j, 2654435761) >>> 24
  return b
}

const opts = parseArgs(process.argv.slice(2))
const socket = utp({ allowHalfOpen: true })
let conn = null
let exiting = false

const rx = { bytes: 0, hash: crypto.createHash('sha1'), sha1: null }
let txBytes = 0
let ended = false // the peer's FIN arrived
let ending = false // we called end()
let errorCode = null
const save = opts.save ? fs.createWriteStream(opts.save) : null

function rxDigest () {
  if (rx.sha1 === null) rx.sha1 = rx.hash.digest('hex')
  return rx.sha1
}

function quit (code) {
  if (exiting) return
  exiting = true
  emit('exit', { code })
  const done = () => process.exit(code)
  if (save) save.end(done)
  else done()
}

function endOurSide (why) {
  if (ending) return
  ending = true
  emit('ending', { why })
  conn.end()
}

// Feed the connection until `total` bytes went out, respecting backpressure.
function sender (total, chunkAt) {
  let offset = 0
  const pump = () => {
    while (offset < total) {
      const n = Math.min(65536, total - offset)
      const chunk = chunkAt(offset, n)
      offset += n
      const more = conn.write(chunk, () => {
        txBytes += n
        if (txBytes === total) {
          emit('sent', { bytes: txBytes })
          if (opts.end) endOurSide('sent')
        }
      })
      if (!more) return conn.once('drain', pump)
    }
    if (total === 0) {
      emit('sent', { bytes: 0 })
      if (opts.end) endOurSide('sent')
    }
  }
  pump()
}

function onConnection (c, remote) {
  conn = c
  emit('connection', { remote })
  c.on('data', (d) => {
    rx.bytes += d.length
    rx.hash.update(d)
    if (save) save.write(d)
  })
  c.on('end', () => {
    ended = true
    emit('end', { bytes: rx.bytes, sha1: rxDigest() })
    if (opts.endOnEof && opts.send === null && !opts.sendFile) endOurSide('eof')
  })
  c.on('finish', () => emit('finish', {}))
  c.on('error', (err) => {
    errorCode = err.code || String(err.message)
    emit('error', { code: errorCode, errno: err.errno === undefined ? null : err.errno, message: String(err.message) })
  })
  c.on('close', () => {
    emit('close', { rx: rx.bytes, sha1: rxDigest(), tx: txBytes, ended, error: errorCode })
    setTimeout(() => socket.close(() => quit(0)), opts.lingerMs)
  })
  if (opts.earlyEnd) endOurSide('early')
  if (opts.send !== null) sender(opts.send, pattern)
  else if (opts.sendFile) {
    const data = fs.readFileSync(opts.sendFile)
    sender(data.length, (off, n) => data.subarray(off, off + n))
  }
}

let last = { rx: -1, tx: -1 }
setInterval(() => {
  if (conn && (rx.bytes !== last.rx || txBytes !== last.tx)) {
    last = { rx: rx.bytes, tx: txBytes }
    emit('progress', last)
  }
}, 500).unref()

setTimeout(() => {
  emit('timeout', { rx: rx.bytes, tx: txBytes, ended, ending, error: errorCode })
  quit(2)
}, opts.timeoutMs)

socket.on('error', (err) => {
  emit('error', { code: err.code || 'SOCKET', message: String(err.message) })
  quit(1)
})

if (opts.listen !== undefined) {
  socket.on('connection', (c) => {
    if (conn) {
      emit('ignored', { remote: `${c.remoteAddress}:${c.remotePort}` })
      c.destroy()
      return
    }
    onConnection(c, `${c.remoteAddress}:${c.remotePort}`)
  })
  socket.listen(opts.listen, () => emit('listening', { port: socket.address().port }))
} else {
  const c = socket.connect(opts.connect.port, opts.connect.host)
  c.on('connect', () => emit('connected', {}))
  onConnection(c, `${opts.connect.host}:${opts.connect.port}`)
}

