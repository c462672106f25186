module e2e/goclient

go 1.19

require (
	github.com/lib/pq v1.10.7
	github.com/rabbitmq/amqp091-go v1.5.0
)
