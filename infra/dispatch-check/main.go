// Command dispatch-check times agent dispatch and join with LiveKit's Go SDK, as a second
// client beside the Python one that `kaiwa bench load` uses.
//
// It stands in for `lk perf agent-load-test`, which cannot be built here (docs/stack-notes.md),
// and measures what that tool measures, the same way: all rooms are made at once, each with
// an agent dispatch, and one participant joins each. Per room it reports the room made →
// the agent in the room, and → the agent's first audio track subscribed. It does not echo
// the agent's speech back as lk's tester does: dispatch and join are what is cross-checked.
//
// Usage: dispatch-check --url ws://127.0.0.1:7880 --rooms 2 (LIVEKIT_API_KEY and
// LIVEKIT_API_SECRET in the environment). It prints one JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
)

type roomResult struct {
	Room         string   `json:"room"`
	CreateS      float64  `json:"create_s"`
	AgentJoinedS *float64 `json:"agent_joined_s"`
	AgentTrackS  *float64 `json:"agent_track_s"`
	Error        string   `json:"error,omitempty"`
	agentJoined  chan struct{}
	agentTrack   chan struct{}
	joinOnce     sync.Once
	trackOnce    sync.Once
}

type settings struct {
	url, key, secret, agentName, metadata, prefix string
	timeout                                       time.Duration
}

func main() {
	var s settings
	rooms := flag.Int("rooms", 1, "rooms made at once")
	flag.StringVar(&s.url, "url", "ws://127.0.0.1:7880", "LiveKit's URL")
	flag.StringVar(&s.agentName, "agent-name", "kaiwa", "the agent to dispatch to each room")
	flag.StringVar(&s.metadata, "metadata", `{"mode": "dialog", "scenario": "assistant"}`,
		"the dispatch's metadata")
	flag.StringVar(&s.prefix, "prefix", "dispatch-check", "the rooms' name prefix")
	flag.DurationVar(&s.timeout, "timeout", 120*time.Second, "how long to wait for each agent")
	flag.Parse()
	s.key, s.secret = os.Getenv("LIVEKIT_API_KEY"), os.Getenv("LIVEKIT_API_SECRET")
	if s.key == "" || s.secret == "" {
		fmt.Fprintln(os.Stderr, "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set")
		os.Exit(2)
	}

	suffix := time.Now().UnixNano()
	results := make([]*roomResult, *rooms)
	var wg sync.WaitGroup
	for i := range results {
		results[i] = &roomResult{
			Room:        fmt.Sprintf("%s-%d-%d", s.prefix, suffix, i),
			agentJoined: make(chan struct{}),
			agentTrack:  make(chan struct{}),
		}
		wg.Add(1)
		go func(r *roomResult) {
			defer wg.Done()
			if err := check(s, r); err != nil {
				r.Error = err.Error()
			}
		}(results[i])
	}
	wg.Wait()
	out, _ := json.Marshal(map[string]any{"rooms": results})
	fmt.Println(string(out))
}

// check makes one room with its dispatch, joins it, and waits for the agent and its track.
func check(s settings, r *roomResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	made := time.Now()
	rooms := lksdk.NewRoomServiceClient(s.url, s.key, s.secret)
	metadata, _ := json.Marshal(map[string]any{"mode": modeOf(s.metadata), "record": true})
	_, err := rooms.CreateRoom(ctx, &livekit.CreateRoomRequest{
		Name:     r.Room,
		Metadata: string(metadata),
		Agents:   []*livekit.RoomAgentDispatch{{AgentName: s.agentName, Metadata: s.metadata}},
	})
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	r.CreateS = time.Since(made).Seconds()
	defer func() {
		// The bench's rooms go when it ends, whatever the agent did.
		_, _ = rooms.DeleteRoom(context.Background(), &livekit.DeleteRoomRequest{Room: r.Room})
	}()

	joined := func(p *lksdk.RemoteParticipant) {
		if p.Kind() == lksdk.ParticipantAgent {
			r.joinOnce.Do(func() { r.AgentJoinedS = since(made); close(r.agentJoined) })
		}
	}
	callback := &lksdk.RoomCallback{
		OnParticipantConnected: joined,
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(
				_ *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, p *lksdk.RemoteParticipant,
			) {
				if p.Kind() == lksdk.ParticipantAgent && pub.Kind() == lksdk.TrackKindAudio {
					joined(p)
					r.trackOnce.Do(func() { r.AgentTrackS = since(made); close(r.agentTrack) })
				}
			},
		},
	}
	token, err := callerToken(s, r.Room)
	if err != nil {
		return err
	}
	room, err := lksdk.ConnectToRoomWithToken(s.url, token, callback)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	defer room.Disconnect()
	for _, p := range room.GetRemoteParticipants() { // an agent in the room before us
		joined(p)
	}
	for _, wait := range []chan struct{}{r.agentJoined, r.agentTrack} {
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("no agent within %s", s.timeout)
		}
	}
	return nil
}

// callerToken grants what the API grants a caller: join this room, publish a microphone,
// subscribe; for ten minutes.
func callerToken(s settings, room string) (string, error) {
	yes, no := true, false
	grant := &auth.VideoGrant{
		RoomJoin:             true,
		Room:                 room,
		CanPublish:           &yes,
		CanPublishSources:    []string{"microphone"},
		CanSubscribe:         &yes,
		CanPublishData:       &no,
		CanUpdateOwnMetadata: &no,
	}
	token := auth.NewAccessToken(s.key, s.secret).
		SetIdentity("dispatch-check").
		SetName("dispatch-check").
		SetAttributes(map[string]string{"language": "en", "kaiwa.mode": modeOf(s.metadata)}).
		SetVideoGrant(grant).
		SetValidFor(10 * time.Minute)
	return token.ToJWT()
}

func modeOf(metadata string) string {
	var parsed struct {
		Mode string `json:"mode"`
	}
	if json.Unmarshal([]byte(metadata), &parsed) != nil || parsed.Mode == "" {
		return "dialog"
	}
	return parsed.Mode
}

func since(t time.Time) *float64 {
	s := time.Since(t).Seconds()
	return &s
}
