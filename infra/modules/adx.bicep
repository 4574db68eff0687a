// Azure Data Explorer: the cluster, the loop's database, its schema (infra/adx/*.kql, applied in order
// by database script resources) and each app's own identity as Ingestor and Viewer of that database.
//
// Network: public endpoint (publicNetworkAccess Enabled). The four Flex Consumption apps query and ingest
// without virtual network integration, from no fixed address, and so do `al bootstrap` and `al labeling setup`
// on the deployer's machine; a private endpoint would need the apps in a virtual network. Every request is
// Entra ID-authenticated and the apps hold database roles only (no Admin).

param clusterName string
param databaseName string
param location string
param tags object = {}

@description('Cluster SKU. The Dev SKU has no SLA; use a Standard SKU (e.g. Standard_E2ads_v5) in production.')
param skuName string = 'Dev(No SLA)_Standard_E2a_v4'
param skuTier string = 'Basic'
param skuCapacity int = 1

@description('Application (client) ids of the four apps\' identities: each is the database\'s Ingestor and Viewer.')
param appClientIds array

@description('Log Analytics workspace the cluster\'s diagnostic settings send to.')
param logAnalyticsWorkspaceId string

resource cluster 'Microsoft.Kusto/clusters@2023-08-15' = {
  name: clusterName
  location: location
  tags: tags
  sku: { name: skuName, tier: skuTier, capacity: skuCapacity }
  properties: {
    // The selector records its selections by streaming ingestion (the next run must see them at once);
    // the collector streams too when AL_ADX_STREAMING=true.
    enableStreamingIngest: true
    enableAutoStop: false
    // Encryption at rest of the cluster's disks (Azure Disk Encryption or encryption at host by SKU) with
    // Microsoft-managed keys. Double (infrastructure) encryption can be chosen only when a cluster is created:
    // not set here (infra/checkov-baseline.yaml).
    enableDiskEncryption: true
    publicNetworkAccess: 'Enabled'
  }
}

// Ingestion results (successes, failures, batching), commands, queries and table usage, and the metrics.
resource clusterLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: cluster
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

resource database 'Microsoft.Kusto/clusters/databases@2023-08-15' = {
  parent: cluster
  name: databaseName
  location: location
  kind: 'ReadWrite'
  properties: {
    softDeletePeriod: 'P3650D' // the tables' own retention policies (03-policies.kql) are shorter where it matters
    hotCachePeriod: 'P31D'
  }
}

// The schema, one script per file and in file order (tables before mappings, policies and functions).
// forceUpdateTag changes with the file's content, so an edited file is applied again on the next `azd up`.
resource tables 'Microsoft.Kusto/clusters/databases/scripts@2023-08-15' = {
  parent: database
  name: 'al-01-tables'
  properties: {
    scriptContent: loadTextContent('../adx/01-tables.kql')
    forceUpdateTag: uniqueString(loadTextContent('../adx/01-tables.kql'))
    continueOnErrors: false
  }
}

resource ingestion 'Microsoft.Kusto/clusters/databases/scripts@2023-08-15' = {
  parent: database
  name: 'al-02-ingestion'
  properties: {
    scriptContent: loadTextContent('../adx/02-ingestion.kql')
    forceUpdateTag: uniqueString(loadTextContent('../adx/02-ingestion.kql'))
    continueOnErrors: false
  }
  dependsOn: [tables]
}

resource policies 'Microsoft.Kusto/clusters/databases/scripts@2023-08-15' = {
  parent: database
  name: 'al-03-policies'
  properties: {
    scriptContent: loadTextContent('../adx/03-policies.kql')
    forceUpdateTag: uniqueString(loadTextContent('../adx/03-policies.kql'))
    continueOnErrors: false
  }
  dependsOn: [ingestion]
}

resource functions 'Microsoft.Kusto/clusters/databases/scripts@2023-08-15' = {
  parent: database
  name: 'al-04-functions'
  properties: {
    scriptContent: loadTextContent('../adx/04-functions.kql')
    forceUpdateTag: uniqueString(loadTextContent('../adx/04-functions.kql'))
    continueOnErrors: false
  }
  dependsOn: [policies]
}

resource selectorStreaming 'Microsoft.Kusto/clusters/databases/scripts@2023-08-15' = {
  parent: database
  name: 'al-05-state-streaming'
  properties: {
    scriptContent: loadTextContent('../adx/05-state-streaming.kql')
    forceUpdateTag: uniqueString(loadTextContent('../adx/05-state-streaming.kql'))
    continueOnErrors: false
  }
  dependsOn: [functions]
}

resource latestPredictions 'Microsoft.Kusto/clusters/databases/scripts@2023-08-15' = {
  parent: database
  name: 'al-06-latest-predictions'
  properties: {
    scriptContent: loadTextContent('../adx/06-latest-predictions.kql')
    forceUpdateTag: uniqueString(loadTextContent('../adx/06-latest-predictions.kql'))
    continueOnErrors: false
  }
  dependsOn: [selectorStreaming]
}

// Least privilege: each app is Ingestor (queued and streaming ingestion: predictions, selections, labels, model
// versions) and Viewer (selection, catalog and label queries) of this database, the narrowest scope the
// principal assignments API has (database; table-level roles exist only as Kusto commands); no Admin. Every
// stage both writes and reads: the collector ingests predictions and reads the model catalog, the selector
// reads candidates and streams its selections, the label app streams labels and reads the serving version,
// the dispatch app reads labels and streams model versions. The service applies principal assignments on one
// database one at a time, hence batch size 1 and the chain.
@batchSize(1)
resource ingestor 'Microsoft.Kusto/clusters/databases/principalAssignments@2023-08-15' = [for appClientId in appClientIds: {
  parent: database
  name: guid(database.id, appClientId, 'Ingestor')
  properties: {
    principalId: appClientId
    principalType: 'App'
    role: 'Ingestor'
    tenantId: tenant().tenantId
  }
  dependsOn: [latestPredictions]
}]

@batchSize(1)
resource viewer 'Microsoft.Kusto/clusters/databases/principalAssignments@2023-08-15' = [for appClientId in appClientIds: {
  parent: database
  name: guid(database.id, appClientId, 'Viewer')
  properties: {
    principalId: appClientId
    principalType: 'App'
    role: 'Viewer'
    tenantId: tenant().tenantId
  }
  dependsOn: [ingestor]
}]

output clusterUri string = cluster.properties.uri
output ingestUri string = cluster.properties.dataIngestionUri
output databaseName string = database.name
