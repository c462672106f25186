// Uninstrumented Go client for the e2e tests: lib/pq (PostgreSQL) and amqp091-go (RabbitMQ),
// the Debian-packaged versions, built offline by harness/goclient.py.
//
//	goclient pg DSN ID NAME1 NAME2     the fixed statement sequence below, on ONE connection
//	goclient publish PORT QUEUE N      N messages to the default exchange (confirms on)
//	goclient consume PORT QUEUE N      declare QUEUE, print READY, handle N deliveries (ack)
//
// Every statement / message prints one JSON line; any unexpected error exits 1.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/lib/pq"
	amqp "github.com/rabbitmq/amqp091-go"
)

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func pgSequence(dsn string, big int64, name1, name2 string) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		die(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx) // one connection for everything
	if err != nil {
		die(err)
	}
	exec := func(label, q string, args ...any) {
		_, err := conn.ExecContext(ctx, q, args...)
		var pqErr *pq.Error
		if errors.As(err, &pqErr) {
			emit(map[string]any{"step": label, "outcome": "error", "sqlstate": string(pqErr.Code)})
		} else if err != nil {
			die(err)
		} else {
			emit(map[string]any{"step": label, "outcome": "ok"})
		}
	}
	count := func(label string, rows *sql.Rows, err error) {
		if err != nil {
			die(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Close(); err != nil {
			die(err)
		}
		emit(map[string]any{"step": label, "outcome": "ok", "rows": n})
	}
	// Parameters: lib/pq parses an unnamed statement, then binds and executes it.
	exec("insert", "INSERT INTO items (id, name) VALUES ($1, $2)", big, name1)
	rows, err := conn.QueryContext(ctx, "SELECT name FROM items WHERE id = $1", big)
	count("select", rows, err)
	// No parameters: a simple Query message.
	rows, err = conn.QueryContext(ctx, "SELECT count(*) FROM items")
	count("count", rows, err)
	// A named prepared statement, executed three times.
	stmt, err := conn.PrepareContext(ctx, "SELECT name FROM items WHERE id = $1")
	if err != nil {
		die(err)
	}
	for i := 0; i < 3; i++ {
		rows, err := stmt.QueryContext(ctx, big)
		count("prepared", rows, err)
	}
	stmt.Close()
	// A transaction: BEGIN, UPDATE, COMMIT.
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		die(err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE items SET name = $1 WHERE id = $2", name2, big); err != nil {
		die(err)
	}
	if err := tx.Commit(); err != nil {
		die(err)
	}
	emit(map[string]any{"step": "transaction", "outcome": "ok"})
	// A unique violation.
	exec("duplicate", "INSERT INTO items (id, name) VALUES ($1, $2)", big, name1)
	conn.Close()
	db.Close()
}

func channel(port string) (*amqp.Connection, *amqp.Channel) {
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:" + port + "/")
	if err != nil {
		die(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		die(err)
	}
	return conn, ch
}

func publish(port, queue string, n int) {
	conn, ch := channel(port)
	if err := ch.Confirm(false); err != nil {
		die(err)
	}
	// NotifyPublish, not PublishWithDeferredConfirm: in 1.5.0 the deferred confirmation is
	// registered after the frames are sent, so a fast broker's ack can be lost.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		body := []byte(fmt.Sprintf("go message %d", i))
		err := ch.PublishWithContext(ctx, "", queue, true, false,
			amqp.Publishing{MessageId: fmt.Sprintf("go-%d", i), CorrelationId: "go-conv",
				Body: body})
		if err != nil {
			die(err)
		}
		select {
		case c := <-confirms:
			if !c.Ack || c.DeliveryTag != uint64(i+1) {
				die(fmt.Errorf("message %d: confirmation %+v", i, c))
			}
		case <-ctx.Done():
			die(fmt.Errorf("message %d: no confirmation", i))
		}
		emit(map[string]any{"op": "publish", "n": i, "message_id": fmt.Sprintf("go-%d", i),
			"body_size": len(body)})
	}
	ch.Close()
	conn.Close()
}

func consume(port, queue string, n int) {
	conn, ch := channel(port)
	if _, err := ch.QueueDeclare(queue, false, false, false, false,
		amqp.Table{"x-expires": int32(120000)}); err != nil {
		die(err)
	}
	if err := ch.Qos(1, 0, false); err != nil {
		die(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		die(err)
	}
	fmt.Println("READY " + queue)
	for i := 0; i < n; i++ {
		select {
		case d := <-deliveries:
			if err := d.Ack(false); err != nil {
				die(err)
			}
			emit(map[string]any{"op": "deliver", "delivery_tag": d.DeliveryTag,
				"redelivered": d.Redelivered, "message_id": d.MessageId,
				"correlation_id": d.CorrelationId, "body_size": len(d.Body)})
		case <-time.After(20 * time.Second):
			die(fmt.Errorf("only %d of %d deliveries", i, n))
		}
	}
	ch.Close()
	conn.Close()
}

func main() {
	if len(os.Args) < 3 {
		die(fmt.Errorf("usage: goclient pg DSN ID NAME1 NAME2 | publish PORT QUEUE N | consume PORT QUEUE N"))
	}
	switch os.Args[1] {
	case "pg":
		big, err := strconv.ParseInt(os.Args[3], 10, 64)
		if err != nil {
			die(err)
		}
		pgSequence(os.Args[2], big, os.Args[4], os.Args[5])
	case "publish", "consume":
		n, err := strconv.Atoi(os.Args[4])
		if err != nil {
			die(err)
		}
		if os.Args[1] == "publish" {
			publish(os.Args[2], os.Args[3], n)
		} else {
			consume(os.Args[2], os.Args[3], n)
		}
	default:
		die(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
