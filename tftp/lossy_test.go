package tftp_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
	"github.com/netroot/netroot/tftp/tftptest"
)

func TestLossyRelay(t *testing.T) {
	content := randomBytes(120_000, 11)
	upDir := t.TempDir()
	srv := &tftp.Server{
		Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
			_ = w.ServeContent(bytes.NewReader(content), int64(len(content)))
		}),
		WriteHandler: tftp.UploadServer(upDir, &tftp.UploadConfig{Overwrite: true}),
		Timeout:      50 * time.Millisecond,
		Retries:      12,
	}
	addr := serve(t, srv)
	for _, tc := range []struct {
		name      string
		client    tftp.Client
		drop, dup float64
	}{
		{"lockstep", tftp.Client{}, 0.05, 0.05},
		{"blksize=1468", tftp.Client{BlockSize: 1468, TransferSize: true}, 0.1, 0.05},
		{"windowsize=16", tftp.Client{BlockSize: 1468, WindowSize: 16}, 0.05, 0.05},
		{"windowsize=64,blksize=512", tftp.Client{BlockSize: 512, WindowSize: 64}, 0.03, 0.03},
		{"windowsize=8,heavy", tftp.Client{BlockSize: 4096, WindowSize: 8, TransferSize: true}, 0.2, 0.1},
	} {
		for _, seed := range []uint64{1, 2} {
			t.Run(fmt.Sprintf("%s/seed=%d", tc.name, seed), func(t *testing.T) {
				relay, err := tftptest.NewRelay(addr, tftptest.RelayConfig{Seed: seed, Drop: tc.drop, Duplicate: tc.dup})
				require.NoError(t, err)
				defer relay.Close()
				c := tc.client
				// The server's dally after the last block lasts a few of its timeouts; the
				// client's must stay well inside it even on a loaded machine under -race.
				c.Timeout, c.Retries = 50*time.Millisecond, 12
				before := srv.Stats().Retransmits
				got, info, err := get(t, &c, relay.Addr(), "file")
				require.NoError(t, err)
				require.Equal(t, content, got)
				assert.EqualValues(t, len(content), info.Bytes)

				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				putInfo, err := c.Put(ctx, relay.Addr(), "up", bytes.NewReader(content), int64(len(content)))
				require.NoError(t, err)
				b, err := readFileOK(upDir, "up")
				require.NoError(t, err)
				require.True(t, bytes.Equal(b, content), "upload committed before the final ACK")

				assert.Positive(t, relay.Dropped())
				// Which side has to retransmit depends on which packets the relay drops.
				retransmits := srv.Stats().Retransmits - before + uint64(info.Retransmits) + uint64(putInfo.Retransmits)
				assert.Positive(t, retransmits, "the losses were recovered by retransmitting")
				t.Logf("dropped %d, duplicated %d, client retransmits %d", relay.Dropped(), relay.Duplicated(), info.Retransmits)
			})
		}
	}
}
