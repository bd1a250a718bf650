#!/bin/bash
# Start one KRaft Kafka node from KAFKA_* variables, as the official apache/kafka image
# reads them (KAFKA_ADVERTISED_LISTENERS -> advertised.listeners: strip KAFKA_, lower
# case, _ -> .), so one set of settings runs either image. Without any, a single combined
# broker+controller node on PLAINTEXT :9092 (advertised as localhost:9092), CONTROLLER :9093.
# CLUSTER_ID names the cluster when the data dir is first formatted (a fixed default:
# a one-node cluster). Data: /var/lib/kafka/data (a volume).
set -euo pipefail

DATA=/var/lib/kafka/data
CONFIG=/opt/kafka/config/server.properties

declare -A props=(
  [node.id]=1
  [process.roles]=broker,controller
  [controller.quorum.voters]=1@localhost:9093
  [listeners]=PLAINTEXT://:9092,CONTROLLER://:9093
  [advertised.listeners]=PLAINTEXT://localhost:9092
  [controller.listener.names]=CONTROLLER
  [listener.security.protocol.map]=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
  [inter.broker.listener.name]=PLAINTEXT
  [log.dirs]=$DATA
  [offsets.topic.replication.factor]=1
  [transaction.state.log.replication.factor]=1
  [transaction.state.log.min.isr]=1
  [group.initial.rebalance.delay.ms]=0
  [num.partitions]=1
)
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_OPTS) continue ;;  # the JVM's, not the broker's
    KAFKA_*)
      key="${name#KAFKA_}"
      key="${key,,}"
      key="${key//__/-}"  # apache/kafka: a double underscore stands for a dash
      props["${key//_/.}"]="$value"
      ;;
  esac
done < <(env)
: >"$CONFIG"
for key in "${!props[@]}"; do printf '%s=%s\n' "$key" "${props[$key]}" >>"$CONFIG"; done

CP="/opt/kafka/libs/*"
JVM=(java ${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties ${KAFKA_OPTS:-} -cp "$CP")
if [ ! -f "$DATA/meta.properties" ]; then
  "${JVM[@]}" kafka.tools.StorageTool format --ignore-formatted \
    -t "${CLUSTER_ID:-4L6g3nShT-eMCtK--X86sw}" -c "$CONFIG"
fi
exec "${JVM[@]}" kafka.Kafka "$CONFIG"
