// Azure Data Explorer: the cluster, the loop's database, its schema (infra/adx/*.kql, applied in order
// by database script resources) and the apps' identity as Ingestor and Viewer of that database.

param clusterName string
param databaseName string
param location string
param tags object = {}

@description('Cluster SKU. The Dev SKU has no SLA; use a Standard SKU (e.g. Standard_E2ads_v5) in production.')
param skuName string = 'Dev(No SLA)_Standard_E2a_v4'
param skuTier string = 'Basic'
param skuCapacity int = 1

@description('Application (client) id of the function apps\' user-assigned identity.')
param appClientId string

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
    publicNetworkAccess: 'Enabled'
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

// Least privilege: Ingestor (queued and streaming ingestion) and Viewer (selection and catalog
// queries); no Admin. The service applies principal assignments on one database one at a time,
// hence the chain.
resource ingestor 'Microsoft.Kusto/clusters/databases/principalAssignments@2023-08-15' = {
  parent: database
  name: guid(database.id, appClientId, 'Ingestor')
  properties: {
    principalId: appClientId
    principalType: 'App'
    role: 'Ingestor'
    tenantId: tenant().tenantId
  }
  dependsOn: [latestPredictions]
}

resource viewer 'Microsoft.Kusto/clusters/databases/principalAssignments@2023-08-15' = {
  parent: database
  name: guid(database.id, appClientId, 'Viewer')
  properties: {
    principalId: appClientId
    principalType: 'App'
    role: 'Viewer'
    tenantId: tenant().tenantId
  }
  dependsOn: [ingestor]
}

output clusterUri string = cluster.properties.uri
output ingestUri string = cluster.properties.dataIngestionUri
output databaseName string = database.name
