package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"unicode/utf8"
)

// On-disk layout of one segment file:
//
//	header  "PXDJRNL1" (8 bytes)
//	record* length u32 LE | crc u32 LE | payload (length bytes of JSON: one Event)
//
// crc is CRC-32C over the four length bytes and the payload, so a garbled
// length is caught like a garbled payload. A record ends the valid prefix
// when its length is 0 or over MaxRecordBytes, it runs past the file's end,
// its CRC or JSON does not check, or its sequence number does not grow:
// whatever follows is a torn tail.
const (
	segMagic    = "PXDJRNL1"
	headerSize  = int64(len(segMagic))
	frameHeader = 8
	// MaxRecordBytes bounds one event on disk; a larger one is stored with
	// its strings cut and its details dropped (and says so).
	MaxRecordBytes = 64 << 10
	// maxFieldBytes is how much of each string field an oversize event keeps.
	maxFieldBytes = 1 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func frameCRC(lenBytes, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, lenBytes), castagnoli, payload)
}

// frame returns the record for payload: header and payload in one slice,
// so one write puts it on disk.
func frame(payload []byte) []byte {
	b := make([]byte, frameHeader+len(payload))
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], frameCRC(b[0:4], payload))
	copy(b[frameHeader:], payload)
	return b
}

// encodeEvent is e's record payload, within MaxRecordBytes: details that
// cannot be encoded (a NaN, a channel) are replaced by why, and an oversize
// event keeps the first maxFieldBytes of each string and drops its details.
func encodeEvent(e Event) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		e.Details = map[string]any{"unencodable_details": err.Error()}
		if b, err = json.Marshal(e); err != nil {
			// Only Details can fail to encode; this cannot happen.
			panic(fmt.Sprintf("events: encoding an event without details: %v", err))
		}
	}
	if len(b) <= MaxRecordBytes {
		return b
	}
	size := len(b)
	for _, s := range []*string{&e.Component, &e.Kind, &e.Subject, &e.From, &e.To, &e.Reason} {
		*s = cut(*s, maxFieldBytes)
	}
	e.Details = map[string]any{"truncated": fmt.Sprintf("this event was %d bytes, over the journal's bound of %d: "+
		"its strings are cut to %d bytes and its details dropped", size, MaxRecordBytes, maxFieldBytes)}
	b, _ = json.Marshal(e) // only strings and a string map remain: cannot fail
	return b
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// record is one event held by a durable journal: what List filters on,
// and the payload it decodes when the event is asked for.
type record struct {
	seq       uint64
	component string
	subject   string
	raw       []byte // the JSON payload
}

// size is the record's length on disk.
func (r record) size() int64 { return int64(frameHeader + len(r.raw)) }

// recordIndex is the part of a payload decoded on open.
type recordIndex struct {
	Seq       uint64 `json:"seq"`
	Component string `json:"component"`
	Subject   string `json:"subject"`
}

// errNotJournal: the file does not start with the segment header.
type errNotJournal struct{ head []byte }

func (e errNotJournal) Error() string {
	return fmt.Sprintf("it does not start with %q (it starts with %q)", segMagic, e.head)
}

// decodeSegment parses a segment file's bytes: the records of its valid
// prefix, in order, and that prefix's length; what follows is a torn tail.
// An empty file, or one holding only part of a header or zeros where the
// header goes (a crash while the segment was being reset), is an empty
// segment (valid 0). Any other start is errNotJournal: not a file proxyd
// wrote, left alone. Record payloads alias b.
func decodeSegment(b []byte) (recs []record, valid int64, err error) {
	if len(b) < len(segMagic) {
		if bytes.HasPrefix([]byte(segMagic), b) || allZero(b) {
			return nil, 0, nil
		}
		return nil, 0, errNotJournal{head: b}
	}
	if string(b[:len(segMagic)]) != segMagic {
		if allZero(b[:len(segMagic)]) {
			return nil, 0, nil
		}
		return nil, 0, errNotJournal{head: b[:len(segMagic)]}
	}
	off := headerSize
	var last uint64
	for int64(len(b))-off >= frameHeader {
		h := b[off : off+frameHeader]
		n := int64(binary.LittleEndian.Uint32(h[0:4]))
		if n == 0 || n > MaxRecordBytes || off+frameHeader+n > int64(len(b)) {
			break
		}
		payload := b[off+frameHeader : off+frameHeader+n]
		if binary.LittleEndian.Uint32(h[4:8]) != frameCRC(h[0:4], payload) {
			break
		}
		var ix recordIndex
		if json.Unmarshal(payload, &ix) != nil || ix.Seq <= last {
			break
		}
		last = ix.Seq
		recs = append(recs, record{seq: ix.Seq, component: ix.Component, subject: ix.Subject, raw: payload})
		off += frameHeader + n
	}
	return recs, off, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
