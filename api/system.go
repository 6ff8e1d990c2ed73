package api

import (
	"context"
	"net/http"
	"runtime"
	"sort"

	"github.com/danielgtaylor/huma/v2"
	"github.com/riverqueue/river"

	"riverbank"
)

// SchemaInfo compares the database schema with what this binary needs.
type SchemaInfo struct {
	AppVersion   int  `json:"app_version" doc:"Newest schema.sql step applied to the database."`
	AppWant      int  `json:"app_want" doc:"Newest schema.sql step this binary knows."`
	RiverVersion int  `json:"river_version" doc:"Newest River migration applied."`
	RiverWant    int  `json:"river_want" doc:"Newest River migration this binary's River knows."`
	Current      bool `json:"current" doc:"True when the database has every migration this binary needs."`
}

// QueueInfo is one River queue with its job counts by state.
type QueueInfo struct {
	Name        string           `json:"name"`
	Paused      bool             `json:"paused"`
	JobsByState map[string]int64 `json:"jobs_by_state" doc:"Job counts by River state: available, pending, retryable, running, scheduled and discarded (the dead letters). Completed and cancelled jobs are not counted (River retains them for a day; counting them would scan the job table)."`
}

// SystemInfo is the body of GET /v1/system/info.
type SystemInfo struct {
	Version     string           `json:"version" doc:"riverbank version."`
	GoVersion   string           `json:"go_version"`
	SchemaInfo  SchemaInfo       `json:"schema"`
	Queues      []QueueInfo      `json:"queues"`
	JobsByState map[string]int64 `json:"jobs_by_state" doc:"Job counts by state over all queues (completed and cancelled not counted)."`
}

type systemInfoOutput struct {
	Body SystemInfo
}

func (h *handlers) registerSystem(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "get-system-info",
		Method:      http.MethodGet,
		Path:        "/v1/system/info",
		Summary:     "Version, schema version, River queues and job counts",
		Tags:        []string{"System"},
	}, h.getSystemInfo)
}

func (h *handlers) getSystemInfo(ctx context.Context, _ *struct{}) (*systemInfoOutput, error) {
	st, err := h.Migrator.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := SystemInfo{
		Version:   riverbank.Version,
		GoVersion: runtime.Version(),
		SchemaInfo: SchemaInfo{
			AppVersion: st.AppVersion, AppWant: st.AppWant,
			RiverVersion: st.RiverVersion, RiverWant: st.RiverWant, Current: st.Current(),
		},
		JobsByState: map[string]int64{},
	}
	queues := map[string]*QueueInfo{}
	// Queues River knows (it records every queue a client has worked).
	ql, err := h.River.QueueList(ctx, river.NewQueueListParams().First(1000))
	if err != nil {
		return nil, err
	}
	for _, q := range ql.Queues {
		queues[q.Name] = &QueueInfo{Name: q.Name, Paused: q.PausedAt != nil, JobsByState: map[string]int64{}}
	}
	counts, err := h.Store.Queries().JobCountsByQueueState(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range counts {
		q, ok := queues[c.Queue]
		if !ok {
			q = &QueueInfo{Name: c.Queue, JobsByState: map[string]int64{}}
			queues[c.Queue] = q
		}
		q.JobsByState[string(c.State)] = c.Count
		out.JobsByState[string(c.State)] += c.Count
	}
	out.Queues = make([]QueueInfo, 0, len(queues))
	for _, q := range queues {
		out.Queues = append(out.Queues, *q)
	}
	sort.Slice(out.Queues, func(i, j int) bool { return out.Queues[i].Name < out.Queues[j].Name })
	return &systemInfoOutput{Body: out}, nil
}
