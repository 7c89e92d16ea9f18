package config

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The TOML decoder does not report where an undecoded key or a decoded value
// sits in the file, so these helpers find the line by a light scan of table
// headers and "key =" lines. They are best effort: 0 means "not found", and the
// error is still reported without a line.

// locateKey finds the line of an undecoded key as the decoder names it
// (array-of-table indexes are not part of toml.Key).
func locateKey(src string, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	table := strings.Join(k[:len(k)-1], ".")
	return scan(src, table, -1, k[len(k)-1])
}

// locatePath finds the line of a validator path such as "server[1].listen" or
// "http.listen" or "shutdown_timeout".
func locatePath(src, path string) int {
	dot := strings.LastIndexByte(path, '.')
	table, key := "", path
	if dot >= 0 {
		table, key = path[:dot], path[dot+1:]
	}
	index := -1
	if open := strings.IndexByte(table, '['); open >= 0 && strings.HasSuffix(table, "]") {
		n, err := strconv.Atoi(table[open+1 : len(table)-1])
		if err == nil {
			index = n
		}
		table = table[:open]
	}
	if line := scan(src, table, index, key); line > 0 {
		return line
	}
	// A whole table that is wrong (say a duplicate name) is reported on its header.
	if key != "" && index < 0 {
		return scan(src, path, -1, "")
	}
	return 0
}

// scan walks the file tracking the current table header; index selects the
// n-th [[table]] (-1 for any). An empty key matches the header line itself.
func scan(src, table string, index int, key string) int {
	cur, seen := "", map[string]int{}
	for i, raw := range strings.Split(src, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[[") {
			if end := strings.Index(line, "]]"); end > 0 {
				cur = strings.TrimSpace(line[2:end])
				seen[cur]++
				if key == "" && cur == table && (index < 0 || seen[cur]-1 == index) {
					return i + 1
				}
				continue
			}
		}
		if line[0] == '[' {
			if end := strings.IndexByte(line, ']'); end > 0 {
				cur = strings.TrimSpace(line[1:end])
				if key == "" && cur == table && index < 0 {
					return i + 1
				}
				continue
			}
		}
		if key == "" || cur != table || (index >= 0 && seen[cur]-1 != index) {
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			continue
		}
		if strings.Trim(strings.TrimSpace(line[:eq]), `"'`) == key {
			return i + 1
		}
	}
	return 0
}
