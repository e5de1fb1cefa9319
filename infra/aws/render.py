"""Renders infra/aws/template.yaml (CloudFormation) from spin.toml, so the deployed
queues, dead-letter queues, Lambda functions and event source mappings always match the
manifest the embedded host runs.

    python3 infra/aws/render.py            # write infra/aws/template.yaml
    python3 infra/aws/render.py --check    # exit 1 if the committed template is stale

Rules mirrored from crates/host/src/manifest.rs: a subscription is named by its
`subscription` key (else the component id, or `<component>-blob`) and takes its `topic`
or its `topics`; its visibility is `visibility_timeout_ms`, else max(30 s, 2 × the
component's timeout); `max_deliveries` defaults to 5, `batch_size` to 10; a component's
timeout defaults to 30 s and its memory to 128 MiB. Queues carry the `troupe:*` tags the
SQS backend reads (crates/aws/src/sqs/topics.rs: the topics space-separated in
`troupe:topic`, continued in `troupe:topic-2` … past 256 characters).

Every subscription's queue gets two CloudWatch alarms: its oldest message older than
`OldestMessageAlarmSeconds` (`ApproximateAgeOfOldestMessage`, which SQS's API does not
answer, so Troupe's own gauge is absent on SQS) and any message in its dead-letter queue;
they notify `AlarmTopicArn` when set.

The queues a trigger `replaces` stay in the template, without topic tags (nothing sends
to them) and without event source mappings, so that a stack update does not delete
them with what they hold; `troupe init --backend aws` moves their messages and dead
letters to the successor. Drop the names from `replaces` afterwards and the next stack
update deletes them.
"""

import json
import math
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "infra/aws/template.yaml"

DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_MEMORY_MB = 128
DEFAULT_BATCH = 10
DEFAULT_MAX_DELIVERIES = 5
# The worker's jobs: a 30 s lease (the worker renews it while a job waits and runs) and
# 10 deliveries (on SQS a worker that dies counts a receive for every job it leased).
WORKER_SUBSCRIPTION = ("gpu-worker", "troupe.embedding.requested", 30)
WORKER_MAX_DELIVERIES = 10
# Lambda needs memory for wasmtime and the model besides the component's own cap.
LAMBDA_BASE_MB = 1024
# AWS: an event source mapping's queue visibility should be 6 x the function timeout.
VISIBILITY_FACTOR = 6


def logical(name):
    return "".join(p.capitalize() for p in name.replace("_", "-").split("-"))


def subscriptions(m):
    comps = m.get("component", {})
    def timeout_ms(c):
        return comps.get(c, {}).get("tool", {}).get("troupe", {}).get("timeout_ms", DEFAULT_TIMEOUT_MS)
    subs = []
    for t in m.get("trigger", {}).get("queue", []):
        topics = t["topics"] if "topics" in t else [t["topic"]]
        subs.append((t.get("subscription", t["component"]), topics, None, t))
    for t in m.get("trigger", {}).get("blob", []):
        subs.append((t.get("subscription", t["component"] + "-blob"),
                     [f"troupe.blob.created/{t['bucket']}"], t.get("prefix") or None, t))
    out = []
    for name, topics, prefix, t in subs:
        vis_ms = t.get("visibility_timeout_ms", max(30_000, 2 * timeout_ms(t["component"])))
        out.append({
            "name": name, "topics": topics, "prefix": prefix, "component": t["component"],
            "replaces": t.get("replaces", []),
            "visibility_s": math.ceil(vis_ms / 1000),
            "max_deliveries": t.get("max_deliveries", DEFAULT_MAX_DELIVERIES),
            "batch": t.get("batch_size", DEFAULT_BATCH),
            "backoff_base_ms": t.get("backoff_base_ms"), "backoff_max_ms": t.get("backoff_max_ms"),
            "dedupe_window_ms": t.get("dedupe_window_ms"),
        })
    return out


def topic_tags(topics):
    """The `troupe:topic` tags of a topic list (as the SQS backend writes them)."""
    values = []
    for topic in topics:
        if values and len(values[-1]) + 1 + len(topic) <= 256:
            values[-1] += " " + topic
        else:
            values.append(topic)
    return [{"Key": "troupe:topic" if i == 0 else f"troupe:topic-{i + 1}", "Value": v}
            for i, v in enumerate(values)]


def is_blob(s):
    return any(t.startswith("troupe.blob.created/") for t in s["topics"])


def resolve_limits(m):
    """`tool.troupe` limits may be `"{{ variable }}"`: resolved to the variable's default."""
    defaults = {k: v.get("default") for k, v in m.get("variables", {}).items()}
    for comp in m.get("component", {}).values():
        tool = comp.get("tool", {}).get("troupe", {})
        for key in ("timeout_ms", "memory_limit_mb", "max_body_bytes"):
            v = tool.get(key)
            if isinstance(v, str):
                name = v.strip().removeprefix("{{").removesuffix("}}").strip()
                tool[key] = int(defaults[name])
    return m


def render():
    m = resolve_limits(tomllib.loads((ROOT / "spin.toml").read_text()))
    comps = m.get("component", {})
    subs = subscriptions(m)
    http = {t["component"] for t in m.get("trigger", {}).get("http", []) if t["component"] != "hello"}
    cron = {t["component"] for t in m.get("trigger", {}).get("cron", [])}
    functions = sorted(http | cron | {s["component"] for s in subs})
    r = {}
    env = {
        "TROUPE_MANIFEST": "/var/task/spin.toml",
        "TROUPE_MODEL_DIR": "/var/task/models/all-MiniLM-L6-v2",
        "TROUPE_S3_BUCKET": {"Ref": "BucketName"},
        "TROUPE_QUEUE_PREFIX": {"Ref": "QueuePrefix"},
        # TLS always (RDS forces it from PostgreSQL 15 on); the password is read from
        # the secret at start-up, never kept in the environment.
        "TROUPE_DATABASE_URL": {"Fn::Sub": "postgres://troupe@${Database.Endpoint.Address}:5432/troupe?sslmode=require"},
        "TROUPE_DATABASE_PASSWORD_SECRET": {"Ref": "DatabaseSecret"},
    }
    # How the functions and the worker's own /v1/embeddings authenticate HTTP requests
    # (keys live in Postgres). An empty value is unset.
    auth_env = {
        "TROUPE_AUTH": {"Ref": "Auth"},
        "TROUPE_OIDC_ISSUER": {"Ref": "OidcIssuer"},
        "TROUPE_OIDC_AUDIENCE": {"Ref": "OidcAudience"},
        "TROUPE_OIDC_TENANT_CLAIM": {"Ref": "OidcTenantClaim"},
        "TROUPE_RATE_LIMIT": {"Ref": "RateLimit"},
        "TROUPE_RATE_BURST": {"Ref": "RateBurst"},
        # Traces over OTLP/HTTP when a collector is named (an empty value exports
        # nothing); log lines as JSON objects, which CloudWatch Logs Insights parses.
        "OTEL_EXPORTER_OTLP_ENDPOINT": {"Ref": "OtlpEndpoint"},
        "TROUPE_LOG_FORMAT": "json",
    }
    r["Bucket"] = {
        "Type": "AWS::S3::Bucket",
        "DependsOn": [f"{logical(s['name'])}QueuePolicy" for s in subs if is_blob(s)],
        "Properties": {
            "BucketName": {"Ref": "BucketName"},
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "NotificationConfiguration": {"QueueConfigurations": [
                {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": [f"{logical(s['name'])}Queue", "Arn"]},
                 **({"Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": s["prefix"]}]}}} if s["prefix"] else {})}
                for s in subs if is_blob(s)]},
        },
    }
    all_subs = subs + [{"name": WORKER_SUBSCRIPTION[0], "topics": [WORKER_SUBSCRIPTION[1]], "prefix": None,
                        "component": None, "replaces": [], "visibility_s": WORKER_SUBSCRIPTION[2],
                        "max_deliveries": WORKER_MAX_DELIVERIES,
                        "batch": None, "backoff_base_ms": None, "backoff_max_ms": None, "dedupe_window_ms": None}]
    # Replaced subscriptions: their queues stay, untagged and unmapped, until `troupe
    # init` has moved what they hold (see the module's doc).
    all_subs += [{**s, "name": old, "topics": [], "prefix": None, "component": None, "replaces": [],
                  "retired_into": s["name"], "timeout_of": s["component"]}
                 for s in subs for old in s["replaces"]]
    for s in all_subs:
        L = logical(s["name"])
        timed = s.get("timeout_of", s["component"])
        timeout_s = math.ceil(comps.get(timed, {}).get("tool", {}).get("troupe", {}).get("timeout_ms", DEFAULT_TIMEOUT_MS) / 1000) if timed else 0
        visibility = max(s["visibility_s"], VISIBILITY_FACTOR * timeout_s)
        tags = topic_tags(s["topics"])
        if s.get("retired_into"):
            tags.append({"Key": "troupe:retired-into", "Value": s["retired_into"]})
        if s["prefix"]:
            tags.append({"Key": "troupe:subject-prefix", "Value": s["prefix"]})
        for k in ("backoff_base_ms", "backoff_max_ms", "dedupe_window_ms"):
            if s[k] is not None:
                tags.append({"Key": "troupe:" + k.replace("_", "-"), "Value": str(s[k])})
        r[f"{L}DeadLetters"] = {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": {"Fn::Sub": f"${{QueuePrefix}}{s['name']}-dlq"},
            "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}}
        r[f"{L}Queue"] = {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": {"Fn::Sub": f"${{QueuePrefix}}{s['name']}"},
            "VisibilityTimeout": visibility,
            "SqsManagedSseEnabled": True,
            "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": [f"{L}DeadLetters", "Arn"]}, "maxReceiveCount": s["max_deliveries"]},
            "Tags": tags}}
        if is_blob(s):
            r[f"{L}QueuePolicy"] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
                "Queues": [{"Ref": f"{L}Queue"}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage",
                    "Resource": {"Fn::GetAtt": [f"{L}Queue", "Arn"]},
                    "Condition": {"ArnLike": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}"}},
                                  "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]}}}
        if s["component"]:
            r[f"{L}Mapping"] = {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
                "EventSourceArn": {"Fn::GetAtt": [f"{L}Queue", "Arn"]},
                "FunctionName": {"Ref": f"{logical(s['component'])}Function"},
                "BatchSize": min(s["batch"], 10),
                "FunctionResponseTypes": ["ReportBatchItemFailures"]}}
    # Paging: per subscription, its oldest message waiting too long (the backlog signal
    # that does not depend on consumer speed) and any dead letter. SQS answers the age
    # only as this CloudWatch metric, not through its API (Troupe's own
    # troupe_queue_oldest_message_age_seconds is absent on SQS).
    for s in all_subs:
        if s.get("retired_into"):
            continue
        L = logical(s["name"])
        actions = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        r[f"{L}OldestMessageAlarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": f"Subscription {s['name']}: its oldest message has waited longer than OldestMessageAlarmSeconds (consumers are stuck or too few).",
            "Namespace": "AWS/SQS", "MetricName": "ApproximateAgeOfOldestMessage",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [f"{L}Queue", "QueueName"]}}],
            "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 5,
            "Threshold": {"Ref": "OldestMessageAlarmSeconds"}, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": actions, "OKActions": actions}}
        r[f"{L}DeadLettersAlarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": f"Subscription {s['name']}: its dead-letter queue holds messages (`troupe dlq list {s['name']}`, then `troupe dlq redrive`).",
            "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [f"{L}DeadLetters", "QueueName"]}}],
            "Statistic": "Maximum", "Period": 300, "EvaluationPeriods": 1,
            "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": actions, "OKActions": actions}}
    for c in functions:
        L = logical(c)
        tool = comps.get(c, {}).get("tool", {}).get("troupe", {})
        r[f"{L}Function"] = {"Type": "AWS::Lambda::Function", "Properties": {
            "FunctionName": {"Fn::Sub": f"${{QueuePrefix}}{c}"},
            "Runtime": "provided.al2023", "Handler": "bootstrap", "Architectures": ["x86_64"],
            "Code": {"S3Bucket": {"Ref": "ArtifactBucket"}, "S3Key": {"Ref": "ArtifactKey"}},
            "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
            "Timeout": min(900, math.ceil(tool.get("timeout_ms", DEFAULT_TIMEOUT_MS) / 1000) + 5),
            "MemorySize": LAMBDA_BASE_MB + tool.get("memory_limit_mb", DEFAULT_MEMORY_MB),
            "ReservedConcurrentExecutions": tool.get("max_concurrency", 16),
            "VpcConfig": {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": [{"Ref": "AppSecurityGroup"}]},
            "Environment": {"Variables": {"TROUPE_COMPONENT": c, **env, **auth_env}}}}
        if c in http:
            r[f"{L}Url"] = {"Type": "AWS::Lambda::Url", "Properties": {"TargetFunctionArn": {"Fn::GetAtt": [f"{L}Function", "Arn"]}, "AuthType": {"Ref": "FunctionUrlAuth"}}}
        if c in cron:
            r[f"{L}Schedule"] = {"Type": "AWS::Events::Rule", "Properties": {
                "ScheduleExpression": "rate(1 minute)", "State": "ENABLED",
                "Targets": [{"Arn": {"Fn::GetAtt": [f"{L}Function", "Arn"]}, "Id": c}]}}
            r[f"{L}SchedulePermission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
                "Action": "lambda:InvokeFunction", "FunctionName": {"Ref": f"{L}Function"},
                "Principal": "events.amazonaws.com", "SourceArn": {"Fn::GetAtt": [f"{L}Schedule", "Arn"]}}}
    queue_arn = {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${QueuePrefix}*"}
    data_access = [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}/*"}},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}"}},
        {"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                                       "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags"], "Resource": queue_arn},
        {"Effect": "Allow", "Action": ["sqs:ListQueues"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": {"Ref": "DatabaseSecret"}},
    ]
    r["FunctionRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"}],
        "Policies": [{"PolicyName": "troupe-data", "PolicyDocument": {"Version": "2012-10-17", "Statement": data_access}}]}}
    r["AppSecurityGroup"] = {"Type": "AWS::EC2::SecurityGroup", "Properties": {
        "GroupDescription": "Troupe functions and worker", "VpcId": {"Ref": "VpcId"}}}
    r["DatabaseSecurityGroup"] = {"Type": "AWS::EC2::SecurityGroup", "Properties": {
        "GroupDescription": "Troupe Postgres: 5432 from the functions and the worker", "VpcId": {"Ref": "VpcId"},
        "SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "SourceSecurityGroupId": {"Ref": "AppSecurityGroup"}}]}}
    r["DatabaseSecret"] = {"Type": "AWS::SecretsManager::Secret", "Properties": {
        "Description": "Troupe Postgres password",
        "GenerateSecretString": {"SecretStringTemplate": "{\"username\": \"troupe\"}", "GenerateStringKey": "password", "PasswordLength": 32, "ExcludePunctuation": True}}}
    r["DatabaseSubnets"] = {"Type": "AWS::RDS::DBSubnetGroup", "Properties": {
        "DBSubnetGroupDescription": "Troupe Postgres", "SubnetIds": {"Ref": "SubnetIds"}}}
    r["Database"] = {"Type": "AWS::RDS::DBInstance", "DeletionPolicy": "Snapshot", "UpdateReplacePolicy": "Snapshot", "Properties": {
        "Engine": "postgres", "EngineVersion": "17.6", "DBInstanceClass": {"Ref": "DatabaseInstanceClass"},
        "AllocatedStorage": 100, "StorageType": "gp3", "StorageEncrypted": True, "DBName": "troupe",
        "MasterUsername": "troupe", "MasterUserPassword": {"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:password}}"},
        "DBSubnetGroupName": {"Ref": "DatabaseSubnets"}, "VPCSecurityGroups": [{"Ref": "DatabaseSecurityGroup"}],
        "PubliclyAccessible": False, "MultiAZ": True, "BackupRetentionPeriod": 7, "DeletionProtection": True,
        "EnableIAMDatabaseAuthentication": False}}
    # The GPU worker: ECS on GPU instances.
    r["Cluster"] = {"Type": "AWS::ECS::Cluster", "Properties": {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}}
    r["InstanceRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"}]}}
    r["InstanceProfile"] = {"Type": "AWS::IAM::InstanceProfile", "Properties": {"Roles": [{"Ref": "InstanceRole"}]}}
    r["GpuLaunchTemplate"] = {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {
        "ImageId": {"Ref": "GpuAmi"}, "InstanceType": {"Ref": "GpuInstanceType"},
        "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
        "SecurityGroupIds": [{"Ref": "AppSecurityGroup"}],
        "MetadataOptions": {"HttpTokens": "required"},
        "UserData": {"Fn::Base64": {"Fn::Sub": "#!/bin/bash\necho ECS_CLUSTER=${Cluster} >> /etc/ecs/ecs.config\necho ECS_ENABLE_GPU_SUPPORT=true >> /etc/ecs/ecs.config\n"}}}}}
    r["GpuInstances"] = {"Type": "AWS::AutoScaling::AutoScalingGroup", "Properties": {
        "MinSize": "0", "MaxSize": {"Ref": "WorkerMaxCount"}, "VPCZoneIdentifier": {"Ref": "SubnetIds"},
        "NewInstancesProtectedFromScaleIn": True,
        "LaunchTemplate": {"LaunchTemplateId": {"Ref": "GpuLaunchTemplate"}, "Version": {"Fn::GetAtt": ["GpuLaunchTemplate", "LatestVersionNumber"]}}}}
    r["GpuCapacity"] = {"Type": "AWS::ECS::CapacityProvider", "Properties": {"AutoScalingGroupProvider": {
        "AutoScalingGroupArn": {"Ref": "GpuInstances"}, "ManagedTerminationProtection": "ENABLED",
        "ManagedScaling": {"Status": "ENABLED", "TargetCapacity": 100}}}}
    r["ClusterCapacity"] = {"Type": "AWS::ECS::ClusterCapacityProviderAssociations", "Properties": {
        "Cluster": {"Ref": "Cluster"}, "CapacityProviders": [{"Ref": "GpuCapacity"}],
        "DefaultCapacityProviderStrategy": [{"CapacityProvider": {"Ref": "GpuCapacity"}, "Weight": 1}]}}
    r["WorkerLogs"] = {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 30}}
    r["WorkerTaskRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": "troupe-data", "PolicyDocument": {"Version": "2012-10-17", "Statement": data_access}}]}}
    r["WorkerExecutionRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}]}}
    r["WorkerTask"] = {"Type": "AWS::ECS::TaskDefinition", "Properties": {
        "RequiresCompatibilities": ["EC2"], "NetworkMode": "awsvpc",
        "TaskRoleArn": {"Fn::GetAtt": ["WorkerTaskRole", "Arn"]}, "ExecutionRoleArn": {"Fn::GetAtt": ["WorkerExecutionRole", "Arn"]},
        "ContainerDefinitions": [{
            "Name": "worker", "Image": {"Ref": "WorkerImage"}, "Essential": True,
            "EntryPoint": ["troupe"], "Command": ["worker", "--backend", "aws", "--listen", "0.0.0.0:8081"],
            "MemoryReservation": 4096, "StopTimeout": 120,
            "PortMappings": [{"ContainerPort": 8081}],
            "ResourceRequirements": [{"Type": "GPU", "Value": "1"}],
            "Environment": [{"Name": k, "Value": v} for k, v in {**env, **auth_env}.items() if k not in ("TROUPE_MANIFEST",)],
            "HealthCheck": {"Command": ["CMD-SHELL", "curl -fs http://127.0.0.1:8081/health || exit 1"], "Interval": 30, "Timeout": 5, "Retries": 3, "StartPeriod": 60},
            "LogConfiguration": {"LogDriver": "awslogs", "Options": {"awslogs-group": {"Ref": "WorkerLogs"}, "awslogs-region": {"Ref": "AWS::Region"}, "awslogs-stream-prefix": "worker"}}}]}}
    r["WorkerService"] = {"Type": "AWS::ECS::Service", "DependsOn": ["ClusterCapacity"], "Properties": {
        "Cluster": {"Ref": "Cluster"}, "TaskDefinition": {"Ref": "WorkerTask"}, "DesiredCount": 1,
        "CapacityProviderStrategy": [{"CapacityProvider": {"Ref": "GpuCapacity"}, "Weight": 1}],
        "NetworkConfiguration": {"AwsvpcConfiguration": {"Subnets": {"Ref": "SubnetIds"}, "SecurityGroups": [{"Ref": "AppSecurityGroup"}]}}}}
    # Workers follow the job backlog.
    r["WorkerScaling"] = {"Type": "AWS::ApplicationAutoScaling::ScalableTarget", "Properties": {
        "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
        "ResourceId": {"Fn::Sub": "service/${Cluster}/${WorkerService.Name}"},
        "MinCapacity": 1, "MaxCapacity": {"Ref": "WorkerMaxCount"}}}
    r["WorkerBacklogPolicy"] = {"Type": "AWS::ApplicationAutoScaling::ScalingPolicy", "Properties": {
        "PolicyName": "troupe-job-backlog", "PolicyType": "TargetTrackingScaling", "ScalingTargetId": {"Ref": "WorkerScaling"},
        "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 200, "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
            "CustomizedMetricSpecification": {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible", "Statistic": "Average",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["GpuWorkerQueue", "QueueName"]}}]}}}}
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Troupe scale-out: S3 bucket with upload notifications, SQS queues and DLQs per subscription, Lambda functions hosting the components, the GPU embedding worker on ECS, Postgres (RDS) for state and pgvector. Rendered from spin.toml by infra/aws/render.py; do not edit by hand.",
        "Parameters": {
            "BucketName": {"Type": "String", "AllowedPattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", "Description": "The documents bucket (TROUPE_S3_BUCKET)."},
            "QueuePrefix": {"Type": "String", "Default": "troupe-", "AllowedPattern": "^[A-Za-z0-9_-]{0,40}$", "Description": "Prefix of every queue and function (TROUPE_QUEUE_PREFIX)."},
            "ArtifactBucket": {"Type": "String", "Description": "Bucket holding the Lambda bundle."},
            "ArtifactKey": {"Type": "String", "Description": "Zip: bootstrap (troupe-lambda), spin.toml, functions/dist/*.wasm, models/all-MiniLM-L6-v2/."},
            "WorkerImage": {"Type": "String", "Description": "Container image of `troupe` built with --features cuda."},
            "VpcId": {"Type": "AWS::EC2::VPC::Id"},
            "SubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Private subnets with routes (NAT or VPC endpoints) to S3, SQS and Secrets Manager."},
            "GpuAmi": {"Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>", "Default": "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"},
            "GpuInstanceType": {"Type": "String", "Default": "g5.xlarge"},
            "WorkerMaxCount": {"Type": "Number", "Default": 4, "MinValue": 1},
            "DatabaseInstanceClass": {"Type": "String", "Default": "db.r6g.large"},
            "FunctionUrlAuth": {"Type": "String", "Default": "AWS_IAM", "AllowedValues": ["AWS_IAM", "NONE"]},
            "Auth": {"Type": "String", "Default": "required", "AllowedValues": ["auto", "required"], "Description": "TROUPE_AUTH: `required` (every /v1/ request needs an API key from `troupe keys create --backend aws` or an OIDC token), or `auto` (only once a key exists or an issuer is set)."},
            "OidcIssuer": {"Type": "String", "Default": "", "AllowedPattern": "^(https://.+)?$", "Description": "TROUPE_OIDC_ISSUER: accept bearer tokens (RS256/ES256) from this https:// issuer; empty for API keys only."},
            "OtlpEndpoint": {"Type": "String", "Default": "", "AllowedPattern": "^(https?://.+)?$", "Description": "OTEL_EXPORTER_OTLP_ENDPOINT: the OpenTelemetry collector (OTLP/HTTP, e.g. an ADOT collector) the functions and the worker export traces to; empty for none."},
            "OidcAudience": {"Type": "String", "Default": "", "Description": "TROUPE_OIDC_AUDIENCE: the `aud` tokens for this API carry (required with OidcIssuer)."},
            "OidcTenantClaim": {"Type": "String", "Default": "tenant", "Description": "TROUPE_OIDC_TENANT_CLAIM: the token claim naming the tenant."},
            "RateLimit": {"Type": "String", "Default": "", "AllowedPattern": "^([0-9]+(\\.[0-9]+)?)?$", "Description": "TROUPE_RATE_LIMIT: requests per second per credential (per function instance); empty for no limit."},
            "RateBurst": {"Type": "String", "Default": "", "AllowedPattern": "^[0-9]*$", "Description": "TROUPE_RATE_BURST: requests a credential may make at once; empty for the rate rounded up."},
            "AlarmTopicArn": {"Type": "String", "Default": "", "Description": "SNS topic the alarms (a subscription's oldest message too old, a dead letter) notify; empty for alarms without actions."},
            "OldestMessageAlarmSeconds": {"Type": "Number", "Default": 900, "MinValue": 60, "Description": "Alarm when a subscription's oldest message has waited longer than this (ApproximateAgeOfOldestMessage)."},
        },
        "Conditions": {"HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}},
        "Resources": r,
        "Outputs": {
            "Bucket": {"Value": {"Ref": "Bucket"}},
            "ApiUrl": {"Value": {"Fn::GetAtt": ["ApiUrl", "FunctionUrl"]}},
            "SearchUrl": {"Value": {"Fn::GetAtt": ["SearchUrl", "FunctionUrl"]}},
            "JobQueueUrl": {"Value": {"Ref": "GpuWorkerQueue"}},
            "DatabaseEndpoint": {"Value": {"Fn::GetAtt": ["Database", "Endpoint.Address"]}},
        },
    }
    # JSON is YAML; one key per line keeps diffs readable.
    return "# Rendered from spin.toml by infra/aws/render.py -- do not edit; run `python3 infra/aws/render.py`.\n" + json.dumps(template, indent=2) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run `python3 infra/aws/render.py`", file=sys.stderr)
            sys.exit(1)
    else:
        OUT.write_text(text)
